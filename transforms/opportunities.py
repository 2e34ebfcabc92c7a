"""fct_opportunity: each deal's current state plus what a manager asks about it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from transforms.history import count_pushes
from transforms.scopes import local_date, with_owner_scopes
from transforms.stages import status_probability, with_stage_info

STALL_REASONS = ("over_stage_limit", "no_activity", "past_close_date", "pushed_repeatedly")


@dataclass(frozen=True)
class StallRules:
    no_activity_days: int = 21
    close_date_pushes: int = 3
    # False where the CRM keeps no history of the expected close date (Odoo): pushes are
    # then unknown, never a clean record of 0
    close_date_changes_recorded: bool = True
    # when a stage has no configured stall_days: this quantile of its past stays
    default_limit_quantile: float = 0.8


def stage_limits(stages: pd.DataFrame, intervals: pd.DataFrame, quantile: float) -> pd.DataFrame:
    """Days a deal may stay in each open stage: configured, or the quantile of finished stays."""
    finished = intervals[intervals.exit_kind != "open"]
    learned = finished.groupby(["pipeline", "stage"]).duration_days.quantile(quantile)
    limits = stages[~(stages.is_won | stages.is_lost)][["pipeline", "stage", "stall_days"]]
    limits = limits.merge(learned.rename("learned").reset_index(), how="left")
    limits["limit_days"] = limits.stall_days.fillna(limits.learned)
    return limits[["pipeline", "stage", "limit_days"]]


def required_stage_skips(entries: pd.DataFrame, stages: pd.DataFrame) -> pd.DataFrame:
    """Each (deal, required stage) the deal skipped, as the funnel method defines hidden deals:
    it entered a later stage (won counts, lost does not) before ever entering the required
    one. `recorded_later` tells a stage visited only afterwards from one never recorded.
    Columns: opportunity_id, stage, stage_order, recorded_later."""
    e = with_stage_info(entries, stages)
    e = e[~e.is_lost.fillna(False).astype(bool)]
    skips = []
    for row in stages[stages.is_required & ~(stages.is_won | stages.is_lost)].itertuples():
        on_pipeline = e[e.pipeline.eq(row.pipeline)]  # a handful of stages, not rows
        first_later = (
            on_pipeline[on_pipeline.stage_order > row.stage_order]
            .groupby("opportunity_id")
            .entered_at.min()
        )
        first_here = (
            on_pipeline[on_pipeline.stage.eq(row.stage)].groupby("opportunity_id").entered_at.min()
        )
        here = first_here.reindex(first_later.index)
        skipped = here.isna() | (here > first_later)
        skips.append(
            pd.DataFrame(
                {
                    "opportunity_id": first_later.index[skipped],
                    "stage": row.stage,
                    "stage_order": row.stage_order,
                    "recorded_later": here[skipped].notna().to_numpy(),
                }
            )
        )
    none = pd.DataFrame(
        {
            "opportunity_id": pd.Series(dtype=object),
            "stage": pd.Series(dtype=object),
            "stage_order": pd.Series(dtype="int64"),
            "recorded_later": pd.Series(dtype=bool),
        }
    )
    return pd.concat([none, *skips], ignore_index=True)


def skipped_required_stages(entries: pd.DataFrame, stages: pd.DataFrame) -> pd.Series:
    """Per deal, the required stages it skipped (required_stage_skips), comma-joined in stage
    order."""
    skips = required_stage_skips(entries, stages).sort_values(["opportunity_id", "stage_order"])
    return skips.groupby("opportunity_id").stage.agg(",".join)


def deal_history(
    entries: pd.DataFrame,
    field_history: pd.DataFrame,
    activities: pd.DataFrame,
    stages: pd.DataFrame,
    *,
    as_of_end: pd.Timestamp,
    skipped_stages: pd.Series | None = None,
) -> pd.DataFrame:
    """What each deal's history says by `as_of_end`, by opportunity_id: when it entered its
    stage, its last activity, its close-date pushes and the required stages it skipped
    (`skipped_stages`: skipped_required_stages, when made beforehand). The same for the deals
    as they were on the day and as they are now, so made once for both."""
    if skipped_stages is None:
        skipped_stages = skipped_required_stages(entries, stages)
    current_entry = entries[entries.entered_at < as_of_end].groupby("opportunity_id").entered_at
    done = activities[activities.occurred_at < as_of_end]
    return pd.DataFrame(
        {
            "stage_entered_at": current_entry.last(),
            "last_activity_at": done.groupby("opportunity_id").occurred_at.max(),
            "close_date_push_count": count_pushes(field_history, as_of_end),
            "skipped_stages": skipped_stages,
        }
    )


def opportunity_facts(
    opportunities: pd.DataFrame,
    entries: pd.DataFrame,
    limits: pd.DataFrame,
    field_history: pd.DataFrame,
    activities: pd.DataFrame,
    users: pd.DataFrame,
    accounts: pd.DataFrame,
    stages: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
    as_of_end: pd.Timestamp,
    timezone: str,
    rules: StallRules,
    history: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Current state of every deal with days in stage, activity, pushes, skips and stall reasons.

    days_in_stage and days_since_activity count calendar days in the reporting time zone up to
    the as-of date; a deal is stalled when it is open and any reason holds:
    over_stage_limit (days_in_stage > the stage's limit), no_activity (days since the last
    activity, or since creation when there was none, > no_activity_days), past_close_date
    (expected close date before the as-of date), pushed_repeatedly (close date moved later at
    least close_date_pushes times).
    """
    opp = with_owner_scopes(with_stage_info(opportunities, stages), users)
    opp["territory_id"] = opp.territory_id.fillna(
        opp.account_id.map(accounts.set_index("account_id").territory_id)
    )

    if history is None:
        history = deal_history(entries, field_history, activities, stages, as_of_end=as_of_end)
    of_deal = history.reindex(opp.opportunity_id)
    for column in ("stage_entered_at", "last_activity_at"):
        opp[column] = of_deal[column].to_numpy()
    # text even when no deal skipped a stage (an object column of NaN otherwise)
    opp["skipped_stages"] = of_deal.skipped_stages.astype("str").set_axis(opp.index)
    opp["days_in_stage"] = (as_of_date - local_date(opp.stage_entered_at, timezone)).dt.days
    quiet_since = opp.last_activity_at.fillna(opp.created_at)
    opp["days_since_activity"] = (as_of_date - local_date(quiet_since, timezone)).dt.days
    pushes = of_deal.close_date_push_count.fillna(0).astype("Int64")
    if not rules.close_date_changes_recorded:
        pushes[:] = pd.NA
    opp["close_date_push_count"] = pushes.array

    opp = opp.merge(limits, how="left", on=["pipeline", "stage"])
    is_open = opp.status.eq("open")
    reasons = {
        "over_stage_limit": opp.days_in_stage > opp.limit_days,
        "no_activity": opp.days_since_activity > rules.no_activity_days,
        "past_close_date": opp.expected_close_date < as_of_date,
        "pushed_repeatedly": opp.close_date_push_count >= rules.close_date_pushes,
    }
    text = pd.Series("", index=opp.index, dtype=object)
    for name in STALL_REASONS:
        hit = reasons[name].fillna(False).astype(bool) & is_open
        text[hit] = text[hit] + "," + name
    opp["stall_reasons"] = text.str.lstrip(",").replace("", np.nan)
    opp["is_stalled"] = opp.stall_reasons.notna()
    opp["probability"] = status_probability(opp.status, opp.probability)
    opp["weighted_amount"] = opp.amount * opp.probability
    opp["as_of_date"] = as_of_date
    return opp[
        [
            "opportunity_id",
            "name",
            "account_id",
            "owner_id",
            "team_id",
            "territory_id",
            "pipeline",
            "stage",
            "stage_order",
            "status",
            "amount",
            "currency",
            "probability",
            "weighted_amount",
            "expected_close_date",
            "created_at",
            "closed_at",
            "stage_entered_at",
            "days_in_stage",
            "last_activity_at",
            "days_since_activity",
            "close_date_push_count",
            "skipped_stages",
            "stall_reasons",
            "is_stalled",
            "lead_source",
            "competitor",
            "lost_reason",
            "as_of_date",
        ]
    ]
