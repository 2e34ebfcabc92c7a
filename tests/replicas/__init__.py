"""The simulator's CRM written in a real CRM's own tables, for the adapter tests.

Each module builds a `Replica`: the CRM's tables (column names and types as that CRM defines
them) filled from a simulated CRM, and `canonical`, the same data as the canonical model sees
it through that CRM: what the CRM cannot hold (Odoo has no territories, say) is left out, and
ids are the CRM's. Written to the native schema, `canonical` is the "same data" the adapter's
marts must equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa

from loudou.canonical import TABLES
from loudou.config import Pipeline
from loudou.simulator import SimulatedCRM, _python_rows


@dataclass
class Replica:
    kind: str
    metadata: sa.MetaData
    tables: dict[str, pd.DataFrame]
    canonical: dict[str, pd.DataFrame]

    def write(self, url: str) -> None:
        engine = sa.create_engine(url)
        try:
            self.metadata.create_all(engine)
            with engine.begin() as connection:
                for table in self.metadata.sorted_tables:
                    frame = self.tables.get(table.name)
                    if frame is not None and len(frame):
                        connection.execute(table.insert(), _python_rows(frame))
            if engine.dialect.name == "postgresql":
                # statistics, as a live CRM database has them (without, the planner picks
                # nested loops for the history joins: 13 s instead of 1 s at scale 1)
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                    c.execute(sa.text("ANALYZE"))
        finally:
            engine.dispose()

    def as_simulated(self) -> SimulatedCRM:
        return SimulatedCRM(tables=self.canonical)


def number(ids: pd.Series, offset: int = 0) -> pd.Series:
    """The simulator's ids ("U00012") as the integer ids most CRMs use (12), nulls kept."""
    digits = ids.astype("string").str[1:].astype("Int64")
    return digits + offset


def as_text(numbers: pd.Series) -> pd.Series:
    return numbers.astype("Int64").astype("string")


def empty(name: str) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in TABLES[name].columns})


def status_changes(history: pd.DataFrame, won_stage: str, lost_stage: str) -> pd.DataFrame:
    """The status rows of field_history: every stage change into or out of won or lost."""
    status = {won_stage: "won", lost_stage: "lost"}
    old = history.from_stage.map(status).fillna("open")
    new = history.to_stage.map(status).fillna("open")
    changed = history.from_stage.notna() & old.ne(new)
    return pd.DataFrame(
        {
            "opportunity_id": history.opportunity_id[changed],
            "field": "status",
            "changed_at": history.changed_at[changed],
            "old_value": old[changed],
            "new_value": new[changed],
        }
    )


def field_history_as_read(
    fields: pd.DataFrame, history: pd.DataFrame, pipeline: Pipeline, tracked: list[str]
) -> pd.DataFrame:
    """field_history as an adapter reads it: the real changes of the fields the CRM tracks
    (an edit to the same value leaves no trace; amounts with two decimals) and the status
    changes the stage history implies."""
    changed = fields[fields.field.isin(tracked) & fields.old_value.ne(fields.new_value)].copy()
    is_amount = changed.field.eq("amount")
    for column in ("old_value", "new_value"):
        changed.loc[is_amount, column] = amount_text(changed[column][is_amount])
    status = status_changes(history, pipeline.won_stage, pipeline.lost_stage)
    return pd.concat([changed, status], ignore_index=True)


def amount_text(values: pd.Series) -> pd.Series:
    """Amounts in field_history as every adapter writes them: two decimals."""
    numbers = pd.to_numeric(values, errors="coerce")
    return pd.Series(
        np.where(numbers.notna(), numbers.map("{:.2f}".format), None), index=values.index
    )


def first_stage_at_creation(history: pd.DataFrame, opportunities: pd.DataFrame) -> None:
    """CRMs start a deal's first stage when the deal is created (the simulator's late-appearing
    deals show their first stage only later)."""
    first = history.from_stage.isna()
    history.loc[first, "changed_at"] = history.opportunity_id[first].map(
        opportunities.set_index("opportunity_id").created_at
    )


def closed_at_last_stage_change(history: pd.DataFrame, opportunities: pd.DataFrame) -> None:
    """CRMs that keep only a close day (or the planned one) close a deal at its last stage
    change: the move into won or lost."""
    last_change = history.groupby("opportunity_id").changed_at.max()
    opportunities["closed_at"] = opportunities.opportunity_id.map(last_change).where(
        opportunities.status.ne("open")
    )
