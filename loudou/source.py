"""Read a CRM database into canonical frames with the SQL of `sql/sources/<kind>/`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import jinja2
import pandas as pd
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.exc import SQLAlchemyError

from loudou.canonical import TABLES, coerce
from loudou.config import redact_url
from loudou.db import engine_for, first_line, is_transient
from loudou.errors import SourceError
from loudou.paths import SQL_DIR

_SQL = jinja2.Environment(
    loader=jinja2.FileSystemLoader(SQL_DIR / "sources"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class SourceSpec:
    """Plain values a task needs to read a source (no engines: they can't be hashed)."""

    kind: str
    url: str
    timezone: str = "UTC"
    stage_mapping: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return redact_url(self.url)


def render_query(kind: str, name: str, incremental: bool) -> str:
    return _SQL.get_template(f"{kind}/{name}.sql").render(since=incremental)


def _to_source_clock(moment_utc: datetime, timezone: str) -> datetime:
    stamp = pd.Timestamp(moment_utc)
    if timezone != "UTC":
        stamp = stamp.tz_localize("UTC").tz_convert(timezone).tz_localize(None)
    return stamp.to_pydatetime()


def _read(spec: SourceSpec, name: str, since_utc: datetime | None) -> pd.DataFrame:
    statement = text(render_query(spec.kind, name, since_utc is not None))
    params = {}
    if since_utc is not None:
        statement = statement.bindparams(bindparam("since", type_=DateTime()))
        params["since"] = _to_source_clock(since_utc, spec.timezone)
    engine = engine_for(spec.url)
    try:
        with engine.connect() as connection:
            return pd.read_sql(statement, connection, params=params)
    except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
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
    """Rename the CRM's stage names to the configured ones (unmapped names pass through)."""
    if not mapping:
        return frame
    frame = frame.copy()
    for column in ("stage", "to_stage", "from_stage"):
        if column in frame:
            frame[column] = frame[column].replace(mapping)
    return frame


def read_table(spec: SourceSpec, name: str, since_utc: datetime | None = None) -> pd.DataFrame:
    """One canonical table; rows changed after `since_utc` only when given."""
    table = TABLES[name]
    frame = _read(spec, name, since_utc if table.incremental != "full" else None)
    missing = [c for c in table.columns if c not in frame.columns]
    if missing:
        raise SourceError(
            f"source: {name} query on {spec.label} returned no column {', '.join(missing)}"
        )
    return map_stages(coerce(table, frame, spec.timezone), spec.stage_mapping)


def read_opportunity_keys(spec: SourceSpec) -> pd.Series:
    frame = _read(spec, "opportunity_keys", None)
    return frame["opportunity_id"].astype("str").str.strip()
