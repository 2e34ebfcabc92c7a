"""Shared fixtures. Services are real: PostgreSQL and MariaDB on this machine, a Prefect test
server. A missing service fails the tests that need it; nothing is skipped."""

from __future__ import annotations

import copy
import email
import email.policy
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from aiosmtpd.controller import Controller

# Prefect keeps results and transaction records under PREFECT_HOME; stale ones would make
# later runs skip work, so every test session gets its own (see ../shared/STACK.md).
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="loudou-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

from loudou.config import Settings, load_settings
from loudou.simulator import SimulatedCRM, simulate, write_crm

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "loudou.example.yaml"
PG_ADMIN = os.environ.get("LOUDOU_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_ADMIN = os.environ.get("LOUDOU_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
SIM_NOW = datetime(2026, 11, 20, 9, 0)
AS_OF = SIM_NOW.date()


def example_settings() -> dict:
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def write_config(directory: Path, source_url: str, warehouse_url: str, **overrides: object) -> Path:
    data = example_settings()
    data["source"]["url"] = source_url
    data["warehouse"]["url"] = warehouse_url
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = directory / "loudou.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings(EXAMPLE)


@pytest.fixture(scope="session")
def small_crm(settings: Settings) -> SimulatedCRM:
    """A small CRM (about 500 deals), the same in every test that uses it."""
    return simulate(
        settings.pipeline(), scale=0.05, seed=11, now=SIM_NOW, thresholds=settings.thresholds
    )


def _scratch_database(admin_url: str, kind: str) -> Iterator[str]:
    name = f"loudou_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            extra = " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" if kind == "mysql" else ""
            connection.execute(sa.text(f"CREATE DATABASE {name}{extra}"))
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"{kind} is required for these tests and is not reachable at {admin_url}: "
            f"{str(exc.orig).splitlines()[0]}"
        )
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with engine.connect() as connection:
            if kind == "postgresql":
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on this machine, dropped afterwards."""
    yield from _scratch_database(PG_ADMIN, "postgresql")


@pytest.fixture
def mysql_url() -> Iterator[str]:
    """A fresh MariaDB database (utf8mb4) on this machine, dropped afterwards."""
    yield from _scratch_database(MYSQL_ADMIN, "mysql")


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server for the whole session (it takes ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def sqlite_crm(tmp_path: Path, small_crm: SimulatedCRM) -> str:
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    write_crm(small_crm, url)
    return url


@pytest.fixture
def duckdb_url(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"


@pytest.fixture
def config(tmp_path: Path, sqlite_crm: str, duckdb_url: str) -> Path:
    """loudou.yaml for the small CRM in SQLite and a DuckDB warehouse, no extract overlap."""
    return write_config(tmp_path, sqlite_crm, duckdb_url, extract__overlap_minutes=0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The season (minutes long) first, so that the other worker runs the rest beside it."""
    items.sort(key=lambda item: "test_season" not in item.nodeid)


@pytest.fixture(autouse=True)
def _environment_as_it_was() -> Iterator[None]:
    """A command run in-process (CliRunner) sets environment defaults for the Prefect it
    starts; they must not reach the next test's subprocesses."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


# the digests' and follow-up mails' SMTP server on loopback, and the warehouse they read

XSS = "<script>alert(1)</script>"


class Inbox:
    """An SMTP server's handler: keeps what arrived; can refuse or fail on demand."""

    def __init__(self):
        self.messages: list[email.message.EmailMessage] = []
        self.refuse: set[str] = set()
        self.fail_after: int | None = None
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.fail_after is not None and len(self.messages) >= self.fail_after:
                return "451 4.3.0 try again later"
            self.messages.append(
                email.message_from_bytes(envelope.content, policy=email.policy.default)
            )
        return "250 Message accepted"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [m for m in self.messages if m["To"].addresses[0].addr_spec == address]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def inbox():
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_crm):
    """A warehouse built by the nightly run from a CRM with an account named like an attack."""
    crm = copy.deepcopy(small_crm)
    stalled_deal = next(iter(crm.truth["stalled"]))
    opps = crm.tables["opportunities"]
    account = opps.loc[opps.opportunity_id == stalled_deal, "account_id"].iat[0]
    accounts = crm.tables["accounts"]
    accounts.loc[accounts.account_id == account, "name"] = XSS
    folder = tmp_path_factory.mktemp("digest")
    source = f"sqlite:///{folder / 'crm.sqlite'}"
    write_crm(crm, source)
    return folder, source, stalled_deal


def digest_config(folder: Path, source: str, tmp_path: Path, port: int) -> Path:
    """A config whose warehouse is a fresh copy of the one the nightly built in `folder`
    (built on first use), so that every test starts from an empty outbox."""
    warehouse = tmp_path / "warehouse.duckdb"
    if not (folder / "warehouse.duckdb").exists():
        from flows.nightly import nightly

        path = write_config(folder, source, f"duckdb:///{folder / 'warehouse.duckdb'}")
        nightly(config=str(path), as_of=AS_OF)
    shutil.copy(folder / "warehouse.duckdb", warehouse)
    return write_config(
        tmp_path,
        source,
        f"duckdb:///{warehouse}",
        digest={
            "language": "en",
            "sender": "loudou@example.com",
            "top_n": 10,
            "crm_url_template": "https://crm.example.com/deals/{opportunity_id}",
            "smtp": {
                "host": "127.0.0.1",
                "port": port,
                "security": "none",
                "retries": 1,
                "retry_delay_seconds": 0,
            },
        },
    )
