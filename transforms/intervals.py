"""Stays in stages: when a deal entered each stage and how it left (fct_stage_interval)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transforms.keys import deal_time_order, positions
from transforms.stages import with_stage_info

DAY = pd.Timedelta(days=1)


def stage_entries(opportunities: pd.DataFrame, stage_history: pd.DataFrame) -> pd.DataFrame:
    """Every time a deal entered a stage, in order: pipeline, opportunity_id, stage, entered_at.

    A deal enters its first stage at creation: that is the first recorded change's from_stage,
    or, for a deal with no history at all, its current stage. Repeated records of the stage a
    deal is already in are not new entries. Deals are numbered by their id's place in text
    order, so the two sorts below are of integers.
    """
    opps = opportunities.reset_index(drop=True)
    rank = pd.factorize(opps.opportunity_id, sort=True)[0]
    deal = positions(stage_history.opportunity_id, opps.opportunity_id)
    in_order = _in_time_order(rank, deal, stage_history.changed_at)
    history, deal = stage_history.iloc[in_order], deal[in_order]
    first = np.r_[True, deal[1:] != deal[:-1]] & (deal >= 0)
    first &= history.from_stage.notna().to_numpy()
    has_history = np.zeros(len(opps), dtype=bool)
    has_history[deal[deal >= 0]] = True
    unrecorded = np.flatnonzero(~has_history)
    # implied entries come first on ties: they happened at creation, before any change
    entry_deal = np.concatenate([deal[first], unrecorded, deal])
    entry_stage = pd.concat(
        [history.from_stage[first], opps.stage.iloc[unrecorded], history.to_stage],
        ignore_index=True,
    )
    created = opps.created_at.to_numpy()
    entered = np.concatenate(
        [created[deal[first]], created[unrecorded], history.changed_at.to_numpy()]
    )
    known = np.flatnonzero(entry_deal >= 0)
    order = known[_in_time_order(rank, entry_deal[known], pd.Series(entered[known]))]
    entry_deal, entry_stage, entered = entry_deal[order], entry_stage.iloc[order], entered[order]
    same_deal = np.r_[False, entry_deal[1:] == entry_deal[:-1]]
    stage_text = entry_stage.reset_index(drop=True)
    repeated = same_deal & stage_text.eq(stage_text.shift(1)).to_numpy(dtype=bool, na_value=False)
    kept = ~repeated
    return pd.DataFrame(
        {
            "pipeline": opps.pipeline.take(entry_deal[kept]).array,
            "opportunity_id": opps.opportunity_id.take(entry_deal[kept]).array,
            "stage": stage_text[kept].array,
            "entered_at": entered[kept],
        }
    )


def _in_time_order(rank: np.ndarray, deal: np.ndarray, moments: pd.Series) -> np.ndarray:
    """Row order by deal (its id's text rank; unknown deals last), then time."""
    return deal_time_order(np.where(deal >= 0, rank[deal], len(rank)), moments)


def stage_intervals(
    opportunities: pd.DataFrame, entries: pd.DataFrame, stages: pd.DataFrame
) -> pd.DataFrame:
    """One row per stay in an open stage, ended by the next entry or by the deal's close.

    exit_kind: advanced (to a later stage), regressed (to an earlier one), won, lost, or open.
    Stays in the won or lost stage are outcomes, not stays. A closed deal whose close was
    not recorded as a stage change leaves its last stage at closed_at.
    """
    e = with_stage_info(entries, stages)
    grouped = e.groupby("opportunity_id")
    e["next_stage"] = grouped.stage.shift(-1)
    e["exited_at"] = grouped.entered_at.shift(-1)
    e["next_order"] = grouped.stage_order.shift(-1)
    e["next_won"] = grouped.is_won.shift(-1)
    e["next_lost"] = grouped.is_lost.shift(-1)
    stays = e[~(e.is_won.fillna(False).astype(bool) | e.is_lost.fillna(False).astype(bool))]
    stays = stays.merge(opportunities[["opportunity_id", "status", "closed_at"]], how="left")

    unrecorded_close = (
        stays.next_stage.isna() & stays.status.isin(["won", "lost"]) & stays.closed_at.notna()
    )
    stays.loc[unrecorded_close, "exited_at"] = stays.loc[unrecorded_close, "closed_at"]
    exit_kind = np.select(
        [
            stays.next_won.eq(True),
            stays.next_lost.eq(True),
            unrecorded_close,
            stays.next_stage.isna(),
            stays.next_order < stays.stage_order,
        ],
        ["won", "lost", stays.status, "open", "regressed"],
        default="advanced",
    )
    out = pd.DataFrame(
        {
            "opportunity_id": stays.opportunity_id,
            "pipeline": stays.pipeline,
            "stage": stays.stage,
            "stage_order": stays.stage_order.astype("Int64"),
            "entered_at": stays.entered_at,
            "exited_at": stays.exited_at,
            "duration_days": (stays.exited_at - stays.entered_at) / DAY,
            "next_stage": stays.next_stage,
            "exit_kind": exit_kind,
        }
    )
    out["visit_number"] = out.groupby(["opportunity_id", "stage"]).cumcount() + 1
    return out.reset_index(drop=True)
