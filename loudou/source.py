"""Read a CRM database into canonical frames with the SQL of `sql/sources/<kind>/`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import jinja2
import pandas as pd
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.exc import SQLAlchemyError

from loudou.canonical import TABLES, coerce
from loudou.config import Source, redact_url
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

    @classmethod
    def from_settings(cls, source: Source) -> SourceSpec:
        return cls(source.kind, source.url, source.timezone, dict(source.stage_mapping))


def render_query(kind: str, name: str, incremental: bool, retry: bool = False) -> str:
    return _SQL.get_template(f"{kind}/{name}.sql").render(since=incremental, retry=retry)


def _to_source_clock(moment_utc: datetime, timezone: str) -> datetime:
    stamp = pd.Timestamp(moment_utc)
    if timezone != "UTC":
        stamp = stamp.tz_localize("UTC").tz_convert(timezone).tz_localize(None)
    return stamp.to_pydatetime()


def _read(
    spec: SourceSpec, name: str, since_utc: datetime | None, retry_ids: Sequence[str] = ()
) -> pd.DataFrame:
    retry = since_utc is not None and len(retry_ids) > 0
    statement = text(render_query(spec.kind, name, since_utc is not None, retry))
    params: dict[str, object] = {}
    if since_utc is not None:
        statement = statement.bindparams(bindparam("since", type_=DateTime()))
        params["since"] = _to_source_clock(since_utc, spec.timezone)
    if retry:
        statement = statement.bindparams(bindparam("retry_ids", expanding=True))
        params["retry_ids"] = list(retry_ids)
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
    return map_stages(frame, spec.stage_mapping)


def read_table(spec: SourceSpec, name: str, since_utc: datetime | None = None) -> pd.DataFrame:
    """One canonical table in canonical dtypes, unchecked (for tools and tests)."""
    return coerce(TABLES[name], read_raw(spec, name, since_utc), spec.timezone)


def read_opportunity_keys(spec: SourceSpec) -> pd.Series:
    frame = _read(spec, "opportunity_keys", None)
    return frame["opportunity_id"].astype("str").str.strip()
