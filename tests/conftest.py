"""Shared fixtures. Services are real: PostgreSQL and MariaDB on this machine, a Prefect test
server. A missing service fails the tests that need it; nothing is skipped."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

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
