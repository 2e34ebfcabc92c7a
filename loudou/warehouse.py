"""The warehouse: DuckDB (embedded, the default) or PostgreSQL, behind one small interface.

A run hands `apply` all its writes at once and they commit in one transaction, so a failed
or killed run leaves the warehouse exactly as it was.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from loudou.canonical import BOOL, DATE, TABLES, TS
from loudou.config import redact_url
from loudou.db import engine_for, first_line
from loudou.errors import WarehouseError
from loudou.paths import SQL_DIR

_SQL_TYPE = {
    TS: "TIMESTAMP",
    DATE: "DATE",
    BOOL: "BOOLEAN",
    "amount": "DOUBLE PRECISION",
    "float": "DOUBLE PRECISION",
}
# PostgreSQL type OIDs, read as the DuckDB warehouse reads the same columns
_PG_DATETIME = {1082, 1114}  # date, timestamp
_PG_INTEGER = {20, 21, 23}  # bigint, smallint, integer
_PG_BOOLEAN = 16
_PG_NUMERIC = 1700
# the advisory lock that serialises loudou's writers on a PostgreSQL warehouse
WAREHOUSE_LOCK_ID = 0x6C6F7564  # "loud"
# rows of a staging table read at a time (see DuckDBWarehouse.read_state_table)
STATE_BATCH_ROWS = 1_000_000
_PARAM = re.compile(r"(?<!:):([A-Za-z_]\w*)")


def utc_now() -> datetime:
    """Now, as the warehouse stores a moment: naive UTC, to the second."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def _used(sql: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Only the parameters the statement names (DuckDB refuses extra ones)."""
    names = set(_PARAM.findall(sql))
    return {k: v for k, v in (params or {}).items() if k in names}


def _pg(sql: str) -> str:
    """A statement with :name parameters as psycopg takes it (a literal % doubled)."""
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


def staging_table(name: str) -> str:
    """The warehouse's replica of a canonical table: the state incremental runs merge into."""
    return f"stg_{name}"


def schema_statements() -> list[str]:
    text = (SQL_DIR / "warehouse" / "schema.sql").read_text(encoding="utf-8")
    contract = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    statements = [s.strip() for s in contract.split(";") if s.strip()]
    # no primary key on the replica: the gate refuses a run whose keys are not unique and a
    # run replaces the keys it writes, while keeping an index up to date made inserting into
    # it two to three times slower (DuckDB, scale 10: stg_activities 1.03 -> 0.48 s)
    for table in TABLES.values():
        columns = ", ".join(
            f"{c} {_SQL_TYPE.get(kind, 'VARCHAR')}" for c, kind in table.columns.items()
        )
        statements.append(f"CREATE TABLE IF NOT EXISTS {staging_table(table.name)} ({columns})")
    return statements


@cache
def scratch_statements() -> dict[str, str]:
    """Each scratch table's CREATE TEMPORARY TABLE (sql/warehouse/scratch.sql), by name."""
    text = (SQL_DIR / "warehouse" / "scratch.sql").read_text(encoding="utf-8")
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    statements = [s.strip() for s in code.split(";") if s.strip()]
    return {re.search(r"TABLE (\w+)", s).group(1): s for s in statements}


@cache
def contract_columns() -> dict[str, tuple[str, ...]]:
    """Each warehouse table's columns, as sql/warehouse/schema.sql declares them (read by
    running the schema in an empty DuckDB, so its ALTERs count too)."""
    with duckdb.connect(":memory:") as con:
        for statement in schema_statements():
            con.execute(statement)
        rows = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "ORDER BY table_name, ordinal_position"
        ).fetchall()
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(table, []).append(column)
    return {table: tuple(columns) for table, columns in tables.items()}


def check_contract(table: str, columns: tuple[str, ...] | list[str]) -> None:
    """Refuse a built table whose columns drift from the contract: a column it lacks would
    be loaded as NULL without a word, an extra one dropped."""
    declared = contract_columns()[table]
    missing = [c for c in declared if c not in columns]
    extra = [c for c in columns if c not in declared]
    if missing or extra:
        drift = "; ".join(
            f"{what} {', '.join(names)}"
            for what, names in (("missing", missing), ("not in the contract", extra))
            if names
        )
        raise WarehouseError(
            f"warehouse: {table} was built with columns that are not sql/warehouse/schema.sql's: "
            f"{drift}"
        )


@dataclass(frozen=True)
class Spooled:
    """A table's rows in a Parquet file until the load reads them: a night's tables wait for
    their one-transaction load on disk instead of in memory (over a gigabyte at scale 100)."""

    path: Path
    columns: tuple[str, ...]
    length: int
    # what making the table took (etl_table_build)
    seconds: float = 0.0

    @classmethod
    def write(cls, rows: pd.DataFrame, path: Path, seconds: float = 0.0) -> Spooled:
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path, compression="lz4")
        return cls(path, tuple(rows.columns), len(rows), seconds)

    def __len__(self) -> int:
        return self.length

    def frame(self) -> pd.DataFrame:
        return pq.read_table(self.path).to_pandas()


@dataclass
class Write:
    """Rows for one table and what they replace: nothing, everything, the same keys, or a slice;
    or a scratch table, made for this transaction only (sql/warehouse/scratch.sql)."""

    table: str
    rows: pd.DataFrame | Spooled
    replace: Literal["none", "all", "keys", "where", "scratch"] = "none"
    keys: tuple[str, ...] = ()
    where: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    # for replace="keys": the keys to delete, when they are more than the rows' own keys
    key_rows: pd.DataFrame | None = None

    def replaced_keys(self) -> pd.DataFrame:
        keys = self.rows[list(self.keys)] if self.key_rows is None else self.key_rows
        return keys.drop_duplicates()


@dataclass(frozen=True)
class SqlBuild:
    """A table made inside the warehouse by a SELECT (see loudou.catalog) over tables written
    before it in the same transaction; it replaces everything or a slice, as a Write does."""

    table: str
    select: str
    params: dict[str, Any]
    replace: Literal["all", "where"]
    where: str = ""

    def clearing(self) -> Write:
        params = _used(self.where, self.params)
        return Write(self.table, pd.DataFrame(), self.replace, where=self.where, params=params)


@dataclass(frozen=True)
class PythonBuild:
    """Tables a Python function makes from what the warehouse holds, inside the load's
    transaction (see loudou.catalog): each of `reads` is a SELECT whose rows `make` receives by
    name; `make` returns the rows of each of `tables`, which replace their as-of day's slice."""

    tables: tuple[str, ...]
    reads: dict[str, str]
    make: Callable[[dict[str, pd.DataFrame]], dict[str, pd.DataFrame]]
    params: dict[str, Any]
    where: str = "as_of_date = :as_of_date"


Build = SqlBuild | PythonBuild


class Transaction:
    """The writes and builds of one transaction, in the order they are given."""

    def __init__(self, warehouse: Warehouse, handle: Any):
        self._warehouse = warehouse
        self._handle = handle
        self.scratch: list[str] = []

    def write(self, write: Write) -> int:
        if write.replace == "scratch":
            self._warehouse._execute(self._handle, f"DROP TABLE IF EXISTS {write.table}")
            self._warehouse._execute(self._handle, scratch_statements()[write.table])
            self.scratch.append(write.table)
        return self._warehouse._apply_one(self._handle, write)

    def drop_scratch(self) -> None:
        """Scratch tables go before the commit: a pooled PostgreSQL connection would keep
        them for whoever uses it next."""
        for table in self.scratch:
            self._warehouse._execute(self._handle, f"DROP TABLE IF EXISTS {table}")

    def build(self, build: Build) -> dict[str, int]:
        """Replace each table's rows (or slice) with those the build makes; returns how many
        rows each table got."""
        if isinstance(build, SqlBuild):
            self.write(build.clearing())
            return {build.table: self._warehouse._insert_select(self._handle, build)}
        inputs = {
            name: self._warehouse._read_input(self._handle, select, build.params)
            for name, select in build.reads.items()
        }
        made = build.make(inputs)
        for table in build.tables:
            check_contract(table, list(made[table].columns))
        params = _used(build.where, build.params)
        return {
            table: self.write(Write(table, made[table], "where", where=build.where, params=params))
            for table in build.tables
        }


class Warehouse(ABC):
    def __init__(self, url: str):
        self.url = url

    @property
    def label(self) -> str:
        return redact_url(self.url)

    @abstractmethod
    def ensure_schema(self) -> None: ...

    @abstractmethod
    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """One transaction: committed when the block ends, rolled back if it raises."""

    def apply(self, writes: list[Write]) -> int:
        """Apply all writes in one transaction; returns the number of rows inserted."""
        with self.transaction() as transaction:
            return sum(transaction.write(write) for write in writes)

    @abstractmethod
    def _apply_one(self, handle: Any, write: Write) -> int: ...

    @staticmethod
    def _execute(handle: Any, statement: str) -> None:
        handle.execute(statement)

    @abstractmethod
    def _insert_select(self, handle: Any, build: SqlBuild) -> int: ...

    @abstractmethod
    def _read(self, handle: Any, sql: str, params: dict[str, Any] | None) -> pd.DataFrame: ...

    def _read_input(self, handle: Any, sql: str, params: dict[str, Any] | None) -> pd.DataFrame:
        """The rows a Python table made in the load reads (a whole staging table, at times)."""
        return self._read(handle, sql, params)

    @contextmanager
    def session(self) -> Iterator[None]:
        """A block of reads; backends that pay for each connection keep one open."""
        yield

    def read_table(self, table: str) -> pd.DataFrame:
        return self.query(f"SELECT * FROM {table}")

    def read_state_table(self, table: str) -> pd.DataFrame:
        """Every row of a staging table, for the canonical state (coerced after)."""
        return self.read_table(table)

    def row_count(self, table: str) -> int:
        return int(self.query(f"SELECT COUNT(*) AS n FROM {table}").n.iat[0])


def _ordered(rows: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in rows.columns]
    return rows.assign(**{c: None for c in missing})[columns]


def duckdb_location(url: str) -> tuple[str, dict[str, str]]:
    """A DuckDB warehouse URL's file and its engine settings (memory_limit, temp_directory:
    see config.Warehouse)."""
    path, _, query = url.split(":///", 1)[1].partition("?")
    return path or ":memory:", dict(parse_qsl(query))


class DuckDBWarehouse(Warehouse):
    def __init__(self, url: str):
        super().__init__(url)
        self.path, self.engine_settings = duckdb_location(url)
        self._in_session = False
        self._shared: duckdb.DuckDBPyConnection | None = None

    @contextmanager
    def session(self) -> Iterator[None]:
        """Reads inside share one connection, opened by the first of them: the digests read
        dozens of times for the first recipient and then mostly from their cache, and
        opening a large warehouse file costs more than rendering a chart."""
        if self._in_session:
            yield
            return
        self._in_session = True
        try:
            yield
        finally:
            self._in_session = False
            shared, self._shared = self._shared, None
            if shared is not None:
                shared.close()

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._shared is not None:
            yield self._shared
            return
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = duckdb.connect(self.path, config=self.engine_settings)
        except duckdb.Error as exc:
            busy = "lock" in str(exc).lower()  # another process is writing: worth a retry
            raise WarehouseError(
                f"warehouse: cannot open {self.label}: {first_line(exc)}", transient=busy
            ) from None
        if self._in_session:
            self._shared = connection  # closed when the session ends
            yield connection
            return
        try:
            yield connection
        finally:
            connection.close()

    def ensure_schema(self) -> None:
        with self._connect() as con:
            for statement in schema_statements():
                con.execute(statement)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        with self._connect() as con:
            return self._read(con, sql, params)

    def _read(
        self, con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None
    ) -> pd.DataFrame:
        return con.execute(_PARAM.sub(r"$\1", sql), _used(sql, params)).df()

    def _read_input(
        self, con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any] | None
    ) -> pd.DataFrame:
        # through Arrow: text columns of a whole staging table come several times faster than .df()
        relation = con.sql(_PARAM.sub(r"$\1", sql), params=_used(sql, params))
        return relation.to_arrow_table().to_pandas(date_as_object=False)

    def read_state_table(self, table: str) -> pd.DataFrame:
        # through Arrow, text stays Arrow text instead of becoming a Python object per value:
        # the staging tables at scale 100 read and coerced in about 6 s instead of 19. Each
        # batch is copied into pyarrow's memory as it comes: what DuckDB's own allocator
        # frees it keeps for itself, out of reach of the transform that follows (scale 20:
        # the state held 446 MB for 249 MB of frames read whole, 296 MB read this way)
        with self._connect() as con:
            reader = con.sql(f"SELECT * FROM {table}").fetch_arrow_reader(STATE_BATCH_ROWS)
            batches = [batch.take(np.arange(batch.num_rows)) for batch in reader]
            return pa.Table.from_batches(batches, schema=reader.schema).to_pandas()

    def columns(self, con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
        return [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                transaction = Transaction(self, con)
                yield transaction
                transaction.drop_scratch()
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def _insert_select(self, con: duckdb.DuckDBPyConnection, build: SqlBuild) -> int:
        select, params = _PARAM.sub(r"$\1", build.select), _used(build.select, build.params)
        made = con.execute(f"SELECT * FROM ({select}) AS built LIMIT 0", params).description
        check_contract(build.table, [column[0] for column in made])
        columns = ", ".join(contract_columns()[build.table])
        (count,) = con.execute(
            f"INSERT INTO {build.table} ({columns}) SELECT {columns} FROM ({select}) AS built",
            params,
        ).fetchone()
        return int(count)

    def _apply_one(self, con: duckdb.DuckDBPyConnection, write: Write) -> int:
        table = write.table
        if write.replace == "all":
            # dropped and made again as it was (inside the transaction): deleting every row
            # one by one from its key's index took five times the insert (scale 10,
            # fct_stage_interval 3.9 -> 0.6 s)
            (create,) = con.execute(
                "SELECT sql FROM duckdb_tables() "
                "WHERE table_name = $table AND schema_name = current_schema()",
                {"table": table},
            ).fetchone()
            con.execute(f"DROP TABLE {table}")
            con.execute(create)
        elif write.replace == "where":
            where = _PARAM.sub(r"$\1", write.where)
            con.execute(f"DELETE FROM {table} WHERE {where}", write.params)
        elif write.replace == "keys":
            con.register("replaced_keys", write.replaced_keys())
            match = " AND ".join(f"{table}.{k} = replaced_keys.{k}" for k in write.keys)
            con.execute(f"DELETE FROM {table} USING replaced_keys WHERE {match}")
            con.unregister("replaced_keys")
        if not len(write.rows):
            return 0
        columns = self.columns(con, table)
        if isinstance(write.rows, Spooled):
            # DuckDB reads the file itself, a row group at a time: at scale 100 pyarrow's read
            # of the whole table and DuckDB's scan of it took a night's load from 16 to 20 s
            # and its peak from 4.4 to 5.1 GB
            have = set(write.rows.columns)
            select = ", ".join(c if c in have else f"NULL AS {c}" for c in columns)
            con.execute(
                f"INSERT INTO {table} SELECT {select} FROM read_parquet($path)",
                {"path": str(write.rows.path)},
            )
            return len(write.rows)
        # as an Arrow table: DuckDB scans it in about half the time of the frame
        # (scale 20, 764,448 rows of mart_stage_conversion: 1.0 -> 0.55 s)
        rows = pa.Table.from_pandas(_ordered(write.rows, columns), preserve_index=False)
        con.register("incoming_rows", rows)
        con.execute(f"INSERT INTO {table} SELECT * FROM incoming_rows")
        con.unregister("incoming_rows")
        return len(write.rows)


class PostgresWarehouse(Warehouse):
    def __init__(self, url: str):
        super().__init__(url)
        self.engine = engine_for(url)

    @contextmanager
    def _raw(self) -> Iterator[Any]:
        try:
            raw = self.engine.raw_connection()
        except SQLAlchemyError as exc:
            raise WarehouseError(
                f"warehouse: cannot connect to {self.label}: {first_line(exc)}"
            ) from None
        try:
            yield raw
        finally:
            raw.close()

    def ensure_schema(self) -> None:
        with self._raw() as raw:
            with raw.cursor() as cursor:
                for statement in schema_statements():
                    cursor.execute(statement)
            raw.commit()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        with self._raw() as raw, raw.cursor() as cursor:
            return self._read(cursor, sql, params)

    def _read(self, cursor: Any, sql: str, params: dict[str, Any] | None) -> pd.DataFrame:
        cursor.execute(_pg(sql), _used(sql, params))
        frame = pd.DataFrame(cursor.fetchall(), columns=[d.name for d in cursor.description])
        return _typed(frame, [d.type_code for d in cursor.description])

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self._raw() as raw:
            try:
                with raw.cursor() as cursor:
                    # one writer at a time; the database releases it even if the run dies
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (WAREHOUSE_LOCK_ID,))
                    transaction = Transaction(self, cursor)
                    yield transaction
                    transaction.drop_scratch()
                raw.commit()
            except BaseException:
                raw.rollback()
                raise

    def _insert_select(self, cursor: Any, build: SqlBuild) -> int:
        select, params = _pg(build.select), _used(build.select, build.params)
        cursor.execute(f"SELECT * FROM ({select}) AS built LIMIT 0", params)
        check_contract(build.table, [column.name for column in cursor.description])
        columns = ", ".join(contract_columns()[build.table])
        cursor.execute(
            f"INSERT INTO {build.table} ({columns}) SELECT {columns} FROM ({select}) AS built",
            params,
        )
        return cursor.rowcount

    @staticmethod
    def _columns(cursor: Any, table: str) -> dict[str, int]:
        """The table's columns and their type OIDs, in order."""
        cursor.execute(f"SELECT * FROM {table} LIMIT 0")
        return {d.name: d.type_code for d in cursor.description}

    @staticmethod
    def _copy(cursor: Any, table: str, rows: pd.DataFrame) -> None:
        statement = (
            f"COPY {table} ({', '.join(rows.columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
        )
        with cursor.copy(statement) as copy:
            for start in range(0, len(rows), 200_000):
                copy.write(
                    rows.iloc[start : start + 200_000].to_csv(
                        index=False, header=False, na_rep="\\N"
                    )
                )

    def _apply_one(self, cursor: Any, write: Write) -> int:
        table = write.table
        if write.replace == "all":
            cursor.execute(f"DELETE FROM {table}")
        elif write.replace == "where":
            where = _pg(write.where)
            cursor.execute(f"DELETE FROM {table} WHERE {where}", write.params)
        elif write.replace == "keys":
            keys = write.replaced_keys()
            cursor.execute(
                f"CREATE TEMP TABLE replaced_keys ON COMMIT DROP AS "
                f"SELECT {', '.join(write.keys)} FROM {table} LIMIT 0"
            )
            self._copy(cursor, "replaced_keys", keys)
            match = " AND ".join(f"{table}.{k} = replaced_keys.{k}" for k in write.keys)
            cursor.execute(f"DELETE FROM {table} USING replaced_keys WHERE {match}")
            cursor.execute("DROP TABLE replaced_keys")
        if len(write.rows):
            rows = write.rows.frame() if isinstance(write.rows, Spooled) else write.rows
            columns = self._columns(cursor, table)
            rows = _ordered(rows, list(columns))
            # an integer column that held a missing value comes as floats ("375.0"), which
            # COPY refuses for an integer column
            integers = [c for c, oid in columns.items() if oid in _PG_INTEGER]
            self._copy(cursor, table, rows.astype(dict.fromkeys(integers, "Int64")))
        return len(write.rows)


def _typed(frame: pd.DataFrame, type_codes: list[int]) -> pd.DataFrame:
    """Rows read from PostgreSQL with the dtypes DuckDB gives the same columns: dates and
    timestamps as datetime64, integers and booleans nullable, numerics as floats."""
    casts: dict[str, Any] = {}
    for name, oid in zip(frame.columns, type_codes):
        if oid in _PG_DATETIME:
            casts[name] = "datetime64[us]"
        elif oid in _PG_INTEGER:
            casts[name] = "Int64"
        elif oid == _PG_BOOLEAN:
            casts[name] = "boolean"
        elif oid == _PG_NUMERIC:
            casts[name] = "float64"
    return frame.astype(casts)


def open_warehouse(url: str) -> Warehouse:
    try:
        backend = make_url(url).get_backend_name()
    except Exception:
        raise WarehouseError(f"warehouse.url: not a database URL: {redact_url(url)}") from None
    if backend == "duckdb":
        return DuckDBWarehouse(url)
    if backend in ("postgresql", "postgres"):
        return PostgresWarehouse(url)
    raise WarehouseError(
        f"warehouse.url: {backend} is not supported; use duckdb:///path or postgresql://"
    )
