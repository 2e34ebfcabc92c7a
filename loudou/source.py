"""Read a CRM database into canonical frames with the SQL of `sql/sources/<kind>/`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import adbc_driver_postgresql.dbapi as adbc
import jinja2
import pandas as pd
import pyarrow as pa
import yaml
from sqlalchemy import URL, DateTime, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.exc import SQLAlchemyError

from loudou.canonical import TABLES, coerce
from loudou.config import Settings, redact_url
from loudou.db import engine_for, first_line, is_transient
from loudou.errors import SourceError
from loudou.paths import SQL_DIR

_SQL = jinja2.Environment(
    loader=jinja2.FileSystemLoader(SQL_DIR / "sources"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)
# renders literal values without psycopg's "%%" escaping (the SQL goes to ADBC, not psycopg)
_LITERAL_PG = PGDialect(paramstyle="named")
# a CRM's stage names are text in its queries: quote them as SQL string literals
_SQL.filters["literal"] = lambda value: "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class SourceSpec:
    """Plain values a task needs to read a source (no engines: they can't be hashed)."""

    kind: str
    url: str
    timezone: str = "UTC"
    stage_mapping: dict[str, str] = field(default_factory=dict)
    # CRMs with one pipeline report it under this name; those that mark won and lost
    # with flags rather than stage names report these stages
    pipeline: str = "default"
    won_stage: str = "won"
    lost_stage: str = "lost"
    # for CRMs that record no currency per deal
    currency: str = "CNY"
    team_managers: dict[str, str] = field(default_factory=dict)
    # what names the source's watermarks: the URL as loudou.yaml writes it
    key: str = ""
    # the zone whose calendar days a CRM's date-as-midnight instants mean (HubSpot's closedate)
    reporting_timezone: str = "UTC"

    @property
    def label(self) -> str:
        return redact_url(self.url)

    @classmethod
    def from_settings(cls, settings: Settings) -> SourceSpec:
        source, pipeline = settings.source, settings.pipeline()
        stages = {*pipeline.open_stage_names, pipeline.won_stage, pipeline.lost_stage}
        # the adapter's mapping of the CRM's stock stages, where it lands on a configured stage
        defaults = {
            crm: ours for crm, ours in default_stage_mapping(source.kind).items() if ours in stages
        }
        return cls(
            source.kind,
            source.url,
            source.timezone,
            defaults | dict(source.stage_mapping),
            pipeline.name,
            pipeline.won_stage,
            pipeline.lost_stage,
            settings.currency,
            dict(source.team_managers),
            source.key,
            settings.timezone,
        )

    def template_values(self) -> dict[str, str]:
        return {
            "pipeline": self.pipeline,
            "won_stage": self.won_stage,
            "lost_stage": self.lost_stage,
            "currency": self.currency,
            "reporting_timezone": self.reporting_timezone,
        }


@cache
def default_stage_mapping(kind: str) -> dict[str, str]:
    """The adapter's `stage_mapping.yaml`: the CRM's stock stages onto the example pipeline."""
    path = SQL_DIR / "sources" / kind / "stage_mapping.yaml"
    if not path.exists():
        return {}
    return {str(k): str(v) for k, v in (yaml.safe_load(path.read_text("utf-8")) or {}).items()}


@cache
def unrecorded_fields(kind: str) -> frozenset[str]:
    """The canonical fields whose changes the CRM keeps no history of (the adapter's
    `unrecorded.yaml`): metrics built on their history are unknown, not zero."""
    path = SQL_DIR / "sources" / kind / "unrecorded.yaml"
    if not path.exists():
        return frozenset()
    return frozenset((yaml.safe_load(path.read_text("utf-8")) or {}).get("fields", []))


def render_query(
    kind: str, name: str, incremental: bool, retry: bool, values: dict[str, str]
) -> str:
    return _SQL.get_template(f"{kind}/{name}.sql").render(since=incremental, retry=retry, **values)


def _to_source_clock(moment_utc: datetime, timezone: str) -> datetime:
    stamp = pd.Timestamp(moment_utc)
    if timezone != "UTC":
        stamp = stamp.tz_localize("UTC").tz_convert(timezone).tz_localize(None)
    return stamp.to_pydatetime()


def _variables(spec: SourceSpec, connection: Any) -> dict[str, str]:
    """What an adapter's queries need to know about this database (its `variables.sql`:
    one row, each column a template value), e.g. which version of the CRM's schema it has."""
    path = SQL_DIR / "sources" / spec.kind / "variables.sql"
    if not path.exists():
        return {}
    row = connection.execute(text(path.read_text("utf-8"))).mappings().one()
    return {name: str(value) for name, value in row.items()}


def _read(
    spec: SourceSpec, name: str, since_utc: datetime | None, retry_ids: Sequence[str] = ()
) -> pd.DataFrame:
    retry = since_utc is not None and len(retry_ids) > 0
    engine = engine_for(spec.url)
    try:
        with engine.connect() as connection:
            values = spec.template_values() | _variables(spec, connection)
            sql = render_query(spec.kind, name, since_utc is not None, retry, values)
            statement = text(sql)
            # a query that reads its table whole (an adapter's empty one, say) binds nothing
            if since_utc is not None and ":since" in sql:
                since = _to_source_clock(since_utc, spec.timezone)
                statement = statement.bindparams(bindparam("since", since, type_=DateTime()))
            if retry and ":retry_ids" in sql:
                statement = statement.bindparams(
                    bindparam("retry_ids", list(retry_ids), expanding=True)
                )
            if engine.dialect.name == "postgresql":
                return _read_arrow(engine.url, statement)
            return pd.read_sql(statement, connection)
    except (SQLAlchemyError, pd.errors.DatabaseError, adbc.Error) as exc:
        what = (
            "cannot connect to"
            if "connect" in first_line(exc).lower()
            else f"cannot read {name} from"
        )
        raise SourceError(
            f"source: {what} {spec.label}: {first_line(exc)}", transient=is_transient(exc)
        ) from None
    finally:
        engine.dispose()


def _read_arrow(url: URL, statement: TextClause) -> pd.DataFrame:
    """A PostgreSQL query's rows as Arrow through ADBC (libpq's binary COPY), close to the
    speed of reading the tables with COPY; pandas.read_sql builds a Python object per value
    first (≈ 5 × slower). The values are written into the SQL by SQLAlchemy's quoting, as
    ADBC binds by position, not by name."""
    sql = str(
        statement.compile(
            dialect=_LITERAL_PG, compile_kwargs={"literal_binds": True, "render_postcompile": True}
        )
    )
    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with adbc.connect(libpq) as connection, connection.cursor() as cursor:
        # timestamptz values and the `:since` literal then mean UTC, whatever the server's zone
        cursor.execute("SET TIME ZONE 'UTC'")
        cursor.execute(sql)
        rows = cursor.fetch_arrow_table()
    # NUMERIC arrives as its text (exact); the gate parses it as it parses any text
    for i, column in enumerate(rows.schema):
        if isinstance(column.type, pa.BaseExtensionType):
            text_values = [chunk.storage for chunk in rows.column(i).chunks]
            rows = rows.set_column(
                i, column.name, pa.chunked_array(text_values, column.type.storage_type)
            )
    return rows.to_pandas(date_as_object=False)


def check_connection(spec: SourceSpec) -> None:
    engine = engine_for(spec.url)
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        raise SourceError(
            f"source: cannot connect to {spec.label}: {first_line(exc)}",
            transient=is_transient(exc),
        ) from None
    finally:
        engine.dispose()


def map_stages(frame: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    """Rename the CRM's stage names to the configured ones (unmapped names pass through).

    Where two CRM stages map onto one configured stage, a move between them is no stage
    change, so stage history drops it."""
    if not mapping:
        return frame
    frame = frame.copy()
    for column in ("stage", "to_stage", "from_stage"):
        if column in frame:
            frame[column] = frame[column].replace(mapping)
    if {"to_stage", "from_stage"} <= set(frame.columns):
        frame = frame[frame.to_stage.ne(frame.from_stage).fillna(True)].reset_index(drop=True)
    return frame


def read_raw(
    spec: SourceSpec,
    name: str,
    since_utc: datetime | None = None,
    retry_ids: Sequence[str] = (),
) -> pd.DataFrame:
    """One canonical table as the source gives it (stages mapped, not yet typed): rows
    changed after `since_utc` when given, and the rows keyed `retry_ids` (quarantined last
    time) in any case. The data-quality gate types and checks it."""
    table = TABLES[name]
    frame = _read(spec, name, since_utc if table.incremental != "full" else None, retry_ids)
    if name == "teams" and spec.team_managers:
        frame = frame.assign(
            manager_id=frame.team_id.astype("str").map(spec.team_managers).fillna(frame.manager_id)
        )
    return map_stages(frame, spec.stage_mapping)


def read_table(spec: SourceSpec, name: str, since_utc: datetime | None = None) -> pd.DataFrame:
    """One canonical table in canonical dtypes, unchecked (for tools and tests)."""
    return coerce(TABLES[name], read_raw(spec, name, since_utc), spec.timezone)


def read_opportunity_keys(spec: SourceSpec) -> pd.Series:
    frame = _read(spec, "opportunity_keys", None)
    return frame["opportunity_id"].astype("str").str.strip()
