"""fct_pipeline_snapshot: the pipeline as it stood at the end of any day, rebuilt from history."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transforms.history import value_as_of
from transforms.stages import with_stage_info


def pipeline_snapshot(
    opportunities: pd.DataFrame,
    entries: pd.DataFrame,
    field_history: pd.DataFrame,
    stages: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
    day_start: pd.Timestamp,
    day_end: pd.Timestamp,
) -> pd.DataFrame:
    """Deals open at `day_end` (UTC) and deals that closed during the day, as they were then.

    Stage comes from stage history; status, amount, expected close date and owner from field
    history (a field without history keeps its current value). A deal without status history
    counts as closed once its closed_at has passed or it entered the won or lost stage.
    """
    opp = opportunities[opportunities.created_at < day_end].set_index("opportunity_id")
    if opp.empty:
        return _empty()
    stage_at = entries[entries.entered_at < day_end].groupby("opportunity_id").stage.last()
    opp["stage_at"] = stage_at.reindex(opp.index).fillna(opp.stage)
    history = {
        field: rows
        for field, rows in field_history[
            field_history.field.isin(["status", "amount", "expected_close_date", "owner_id"])
        ].groupby("field")
    }

    def as_of(column: str) -> pd.Series:
        rows = history.get(column)
        return opp[column] if rows is None else value_as_of(opp[column], rows, day_end)

    staged = with_stage_info(
        opp[["pipeline", "stage_at"]].reset_index(), stages, stage_column="stage_at"
    ).set_index("opportunity_id")
    closed_by_then = opp.closed_at.notna() & (opp.closed_at < day_end)
    derived = np.where(
        closed_by_then,
        opp.status,
        np.where(staged.is_won.eq(True), "won", np.where(staged.is_lost.eq(True), "lost", "open")),
    )
    status = pd.Series(derived, index=opp.index, dtype=object)
    if "status" in history:
        status = value_as_of(status, history["status"], day_end)
    closed_today = opp.closed_at.ge(day_start) & opp.closed_at.lt(day_end)
    keep = status.eq("open") | (closed_today & status.isin(["won", "lost"]))

    amount = pd.to_numeric(as_of("amount"), errors="coerce")
    probability = np.where(
        status.eq("won"),
        1.0,
        np.where(status.eq("lost"), 0.0, staged.probability.reindex(opp.index)),
    )
    snapshot = pd.DataFrame(
        {
            "as_of_date": as_of_date,
            "opportunity_id": opp.index,
            "owner_id": as_of("owner_id").astype("str").to_numpy(),
            "pipeline": opp.pipeline.to_numpy(),
            "stage": opp.stage_at.to_numpy(),
            "status": status.to_numpy(),
            "amount": amount.to_numpy(dtype="float64"),
            "expected_close_date": pd.to_datetime(as_of("expected_close_date"), errors="coerce")
            .dt.normalize()
            .to_numpy(),
            "probability": probability,
        }
    )
    snapshot["weighted_amount"] = snapshot.amount * snapshot.probability
    return snapshot[keep.to_numpy()].reset_index(drop=True)


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        columns=[
            "as_of_date",
            "opportunity_id",
            "owner_id",
            "pipeline",
            "stage",
            "status",
            "amount",
            "expected_close_date",
            "probability",
            "weighted_amount",
        ]
    )
