"""The deals as they were at any moment, rebuilt from history, for the tables still made in
pandas (the warehouse makes the day's snapshot itself: sql/facts/_deals_as_of.sql)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transforms.history import FieldChanges
from transforms.keys import positions
from transforms.stages import status_probability, with_stage_info

TRACKED_FIELDS = ("status", "amount", "expected_close_date", "owner_id")


def tracked_changes(field_history: pd.DataFrame, opportunities: pd.DataFrame) -> FieldChanges:
    """The history deals_as_of reads, prepared once for any number of moments."""
    return FieldChanges.of(field_history, opportunities, TRACKED_FIELDS)


def deals_as_of(
    opportunities: pd.DataFrame,
    entries: pd.DataFrame,
    changes: FieldChanges,
    stages: pd.DataFrame,
    moment: pd.Timestamp,
) -> pd.DataFrame:
    """Every deal created before `moment` (naive UTC) as it was then.

    Stage comes from stage history; status, amount, expected close date and owner from field
    history (a field without history keeps its current value). A deal without status history
    counts as closed once its closed_at has passed or it entered the won or lost stage.
    """
    opp = opportunities[opportunities.created_at < moment].set_index("opportunity_id")
    stage_at = _last_stage_entered(entries, opp.index, moment).fillna(opp.stage)

    def as_of(column: str, current: pd.Series) -> pd.Series:
        return changes.value_as_of(column, current, moment)

    staged = with_stage_info(pd.DataFrame({"pipeline": opp.pipeline, "stage": stage_at}), stages)
    staged.index = opp.index
    closed_by_then = opp.closed_at.notna() & (opp.closed_at < moment)
    by_stage = np.where(
        staged.is_won.eq(True), "won", np.where(staged.is_lost.eq(True), "lost", "open")
    )
    derived = opp.status.astype("str").where(closed_by_then, pd.Series(by_stage, index=opp.index))
    status = as_of("status", derived)
    probability = status_probability(status, staged.probability)
    deals = pd.DataFrame(
        {
            "opportunity_id": opp.index,
            "owner_id": as_of("owner_id", opp.owner_id).astype("str").to_numpy(),
            "pipeline": opp.pipeline.to_numpy(),
            "stage": stage_at.to_numpy(),
            "status": status.to_numpy(),
            "amount": pd.to_numeric(as_of("amount", opp.amount), errors="coerce").to_numpy(
                "float64"
            ),
            "expected_close_date": pd.to_datetime(
                as_of("expected_close_date", opp.expected_close_date), errors="coerce"
            )
            .dt.normalize()
            .to_numpy(),
            "stage_order": staged.stage_order.to_numpy(),
            "probability": probability,
            "closed_at": opp.closed_at.to_numpy(),
        }
    )
    deals["weighted_amount"] = deals.amount * deals.probability
    return deals


def _last_stage_entered(entries: pd.DataFrame, ids: pd.Index, moment: pd.Timestamp) -> pd.Series:
    """The stage each deal of `ids` last entered before `moment` (entries in time order per
    deal), NaN for a deal with none; found by integer deal position, not grouped by text id."""
    before = entries[entries.entered_at.lt(moment) & entries.stage.notna()]
    deal = positions(before.opportunity_id, ids)
    known = deal >= 0
    last = np.full(len(ids), -1)
    np.maximum.at(last, deal[known], np.flatnonzero(known))  # the latest row of each deal
    return pd.Series(before.stage.array.take(last, allow_fill=True), index=ids, name="stage")
