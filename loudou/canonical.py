"""The canonical model every CRM maps into (../shared/DESIGN.md), and the native schema.

The native source kind is exactly this model as tables named `crm_<table>`, so the same
definition creates the simulator's tables on any SQLAlchemy dialect and types the frames
extracted from any CRM.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
)

ID, TEXT, TS, DATE, AMOUNT, FLOAT, BOOL = (
    "id",
    "text",
    "timestamp",
    "date",
    "amount",
    "float",
    "bool",
)

_SQL_TYPES = {
    ID: lambda: String(64),
    TEXT: lambda: String(255),
    TS: DateTime,
    DATE: Date,
    AMOUNT: lambda: Numeric(18, 2),
    FLOAT: Float,
    BOOL: Boolean,
}


@dataclass(frozen=True)
class CanonicalTable:
    name: str
    key: tuple[str, ...]
    columns: dict[str, str]
    # how a nightly run finds changed rows: by the row's own updated_at, through its
    # opportunity's updated_at (history has no updated_at of its own), or by reading it all
    incremental: str = "updated_at"

    @property
    def native_name(self) -> str:
        return f"crm_{self.name}"

    @property
    def time_columns(self) -> list[str]:
        return [c for c, kind in self.columns.items() if kind == TS]


TABLES: dict[str, CanonicalTable] = {
    t.name: t
    for t in [
        CanonicalTable(
            "territories",
            ("territory_id",),
            {"territory_id": ID, "name": TEXT, "parent_id": ID, "updated_at": TS},
        ),
        CanonicalTable(
            "teams", ("team_id",), {"team_id": ID, "name": TEXT, "manager_id": ID, "updated_at": TS}
        ),
        CanonicalTable(
            "users",
            ("user_id",),
            {
                "user_id": ID,
                "name": TEXT,
                "email": TEXT,
                "manager_id": ID,
                "team_id": ID,
                "territory_id": ID,
                "is_active": BOOL,
                "hired_at": TS,
                "left_at": TS,
                "updated_at": TS,
            },
        ),
        CanonicalTable(
            "accounts",
            ("account_id",),
            {
                "account_id": ID,
                "name": TEXT,
                "industry": TEXT,
                "territory_id": ID,
                "owner_id": ID,
                "phone": TEXT,
                "email": TEXT,
                "website": TEXT,
                "tax_id": TEXT,
                "created_at": TS,
                "updated_at": TS,
            },
        ),
        CanonicalTable(
            "leads",
            ("lead_id",),
            {
                "lead_id": ID,
                "source": TEXT,
                "owner_id": ID,
                "account_id": ID,
                "status": TEXT,
                "created_at": TS,
                "converted_at": TS,
                "opportunity_id": ID,
                "updated_at": TS,
            },
        ),
        CanonicalTable(
            "opportunities",
            ("opportunity_id",),
            {
                "opportunity_id": ID,
                "name": TEXT,
                "account_id": ID,
                "owner_id": ID,
                "pipeline": TEXT,
                "stage": TEXT,
                "status": TEXT,
                "amount": AMOUNT,
                "currency": TEXT,
                "expected_close_date": DATE,
                "created_at": TS,
                "updated_at": TS,
                "closed_at": TS,
                "lost_reason": TEXT,
                "competitor": TEXT,
                "lead_source": TEXT,
                "is_deleted": BOOL,
            },
        ),
        CanonicalTable(
            "stage_history",
            ("opportunity_id", "changed_at", "to_stage"),
            {
                "opportunity_id": ID,
                "changed_at": TS,
                "to_stage": TEXT,
                "from_stage": TEXT,
                "changed_by": ID,
            },
            incremental="opportunity",
        ),
        CanonicalTable(
            "field_history",
            ("opportunity_id", "field", "changed_at"),
            {
                "opportunity_id": ID,
                "field": TEXT,
                "changed_at": TS,
                "old_value": TEXT,
                "new_value": TEXT,
            },
            incremental="opportunity",
        ),
        CanonicalTable(
            "activities",
            ("activity_id",),
            {
                "activity_id": ID,
                "opportunity_id": ID,
                "account_id": ID,
                "owner_id": ID,
                "type": TEXT,
                "occurred_at": TS,
                "updated_at": TS,
            },
        ),
        CanonicalTable(
            "targets",
            ("scope_kind", "scope_id", "period_start"),
            {
                "scope_kind": TEXT,
                "scope_id": ID,
                "period_start": DATE,
                "period_end": DATE,
                "amount": AMOUNT,
            },
            incremental="full",
        ),
    ]
}


def native_metadata() -> MetaData:
    """SQLAlchemy tables of the native schema (`crm_<table>`), for any dialect."""
    metadata = MetaData()
    for table in TABLES.values():
        Table(
            table.native_name,
            metadata,
            *[
                Column(
                    name,
                    _SQL_TYPES[kind](),
                    primary_key=name in table.key,
                    nullable=name not in table.key,
                )
                for name, kind in table.columns.items()
            ],
            mysql_charset="utf8mb4",
            mysql_collate="utf8mb4_bin",
        )
        # history can hold long free text values
        if table.name == "field_history":
            metadata.tables[table.native_name].c.old_value.type = Text()
            metadata.tables[table.native_name].c.new_value.type = Text()
    return metadata


def to_utc_naive(values: pd.Series, source_timezone: str) -> pd.Series:
    """Naive source timestamps are in the source's time zone; the warehouse keeps naive UTC.

    Zone-aware values (PostgreSQL's `timestamp with time zone`, as Fivetran writes instants)
    are instants already: converted to UTC whatever `source_timezone` says."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")
    parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):  # text with offsets, e.g. ISO 8601 "Z"
        return parsed.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")
    parsed = parsed.astype("datetime64[us]")
    if source_timezone == "UTC":
        return parsed
    return (
        parsed.dt.tz_localize(source_timezone, ambiguous="NaT", nonexistent="shift_forward")
        .dt.tz_convert("UTC")
        .dt.tz_localize(None)
    )


def coerce(table: CanonicalTable, frame: pd.DataFrame, source_timezone: str) -> pd.DataFrame:
    """Give an extracted frame the canonical column order and dtypes."""
    out = {}
    for name, kind in table.columns.items():
        values = frame[name] if name in frame else pd.Series(None, index=frame.index, dtype=object)
        if kind == TS:
            out[name] = to_utc_naive(values, source_timezone)
        elif kind == DATE:
            days = pd.to_datetime(values, errors="coerce", format="mixed")
            if isinstance(days.dtype, pd.DatetimeTZDtype):  # a day is the day as written
                days = days.dt.tz_localize(None)
            out[name] = days.dt.normalize().astype("datetime64[us]")
        elif kind in (AMOUNT, FLOAT):
            out[name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif kind == BOOL:
            out[name] = _to_bool(values)
        elif kind == ID:
            out[name] = _to_id(values)
        else:
            out[name] = values.astype("str")
    return pd.DataFrame(out, index=frame.index).reset_index(drop=True)


def _to_bool(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype("Float64").ne(0).astype("boolean")
    text = values.astype("str").str.strip().str.lower()
    return text.isin(["1", "true", "t", "yes", "y"]).astype("boolean").mask(text.isna())


def _to_id(values: pd.Series) -> pd.Series:
    # integer keys (Odoo, SuiteCRM) arrive as floats when a column has nulls: 7.0 -> "7"
    if pd.api.types.is_numeric_dtype(values):
        values = values.astype("Int64")
    return values.astype("str").str.strip()
