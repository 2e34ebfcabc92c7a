"""Engines for sources and warehouses, and database errors told in one line."""

from __future__ import annotations

from adbc_driver_manager import OperationalError as ArrowOperationalError
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, ProgrammingError

from loudou.config import redact_url

# URLs without a driver get the one loudou installs
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
}

# words in DBAPI messages that say a retry cannot help
_PERMANENT = (
    "password",
    "authentication",
    "access denied",
    "does not exist",
    "no such table",
    "unknown database",
    "doesn't exist",
    "permission denied",
    "syntax error",
    "unable to open database",
    "undefinedtable",
    "no such column",
    "unknown column",
)


def normalise_url(url: str) -> str:
    parsed = make_url(url)
    driver = _DEFAULT_DRIVERS.get(parsed.drivername)
    if driver:
        parsed = parsed.set(drivername=driver)
    if parsed.drivername.startswith("mysql") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed.render_as_string(hide_password=False)


def engine_for(url: str) -> Engine:
    try:
        return create_engine(normalise_url(url), pool_pre_ping=True)
    except (NoSuchModuleError, ImportError, ValueError) as exc:
        raise ValueError(f"{redact_url(url)}: unsupported database URL ({exc})") from None


def first_line(exc: BaseException) -> str:
    """The DBAPI's own message, first line only, without SQLAlchemy's statement dump."""
    if exc.__cause__ is not None and not hasattr(exc, "orig"):  # pandas wraps DBAPI errors
        exc = exc.__cause__
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ProgrammingError):
        return False
    message = first_line(exc).lower()
    if any(word in message for word in _PERMANENT):
        return False
    # ADBC (PostgreSQL reads) raises its own DB-API errors, not SQLAlchemy's
    if not isinstance(exc, (DBAPIError, ArrowOperationalError)):
        return False
    return (
        getattr(exc, "connection_invalidated", False)
        or "connect" in message
        or "timeout" in message
        or "server" in message
    )
