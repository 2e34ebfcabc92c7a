"""Stays in stages: when a deal entered each stage and how it left (fct_stage_interval)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from transforms.keys import is_in
from transforms.stages import with_stage_info

DAY = pd.Timedelta(days=1)


def stage_entries(opportunities: pd.DataFrame, stage_history: pd.DataFrame) -> pd.DataFrame:
    """Every time a deal entered a stage, in order: pipeline, opportunity_id, stage, entered_at.

    A deal enters its first stage at creation: that is the first recorded change's from_stage,
    or, for a deal with no history at all, its current stage. Repeated records of the stage a
    deal is already in are not new entries.
    """
    opps = opportunities[["opportunity_id", "pipeline", "stage", "created_at"]]
    history = stage_history.sort_values(["opportunity_id", "changed_at"], kind="stable")
    recorded = history.rename(columns={"to_stage": "stage", "changed_at": "entered_at"})[
        ["opportunity_id", "stage", "entered_at"]
    ]
    first = history.drop_duplicates("opportunity_id")
    first = first[first.from_stage.notna()].merge(opps[["opportunity_id", "created_at"]])
    implied = pd.DataFrame(
        {
            "opportunity_id": first.opportunity_id,
            "stage": first.from_stage,
            "entered_at": first.created_at,
        }
    )
    unrecorded = opps[~is_in(opps.opportunity_id, history.opportunity_id)]
    at_creation = pd.DataFrame(
        {
            "opportunity_id": unrecorded.opportunity_id,
            "stage": unrecorded.stage,
            "entered_at": unrecorded.created_at,
        }
    )
    # implied entries sort first on ties: they happened at creation, before any change
    entries = pd.concat([implied, at_creation, recorded], ignore_index=True)
    entries = entries[is_in(entries.opportunity_id, opps.opportunity_id)]
    entries = entries.sort_values(["opportunity_id", "entered_at"], kind="stable")
    repeated = entries.stage.eq(entries.groupby("opportunity_id").stage.shift(1))
    entries = entries[~repeated].merge(opps[["opportunity_id", "pipeline"]], how="left")
    return entries[["pipeline", "opportunity_id", "stage", "entered_at"]].reset_index(drop=True)


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
