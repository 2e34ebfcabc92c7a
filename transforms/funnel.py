"""Where deals convert and where they leak: mart_funnel and mart_stage_conversion.

Two funnels, as users read them:
- strict: a deal counts at a stage only if the CRM recorded it there;
- any_stage: a deal that reached a later stage counts as having passed the earlier ones
  (entering a skipped stage at the moment it entered the later one).

A cohort is the deals that first entered a stage in a period. Of those, by the as-of date:
advanced = reached a later stage (won counts), won = won, lost = lost without reaching a later
stage, still_open = neither. conversion_rate = advanced / (advanced + lost): read among the
deals whose fate at the stage is decided, so young cohorts are not understated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import binom

from transforms.scopes import local_time, per_scope, period_start, recent_period_starts

CUTS = ("lead_source", "industry", "competitor")
CUT_SCOPES: dict[str, str | None] = {"company": None, "team": "team_id"}


@dataclass(frozen=True)
class ConversionRules:
    weeks: int = 12
    months: int = 12
    quarters: int = 6
    # a stage is a bottleneck when its conversion is below the benchmark with p < alpha
    alpha: float = 0.05
    trailing_periods: int = 4
    # week-over-week drop in conversion (absolute) raised as an anomaly
    weekly_drop: float = 0.15
    min_decided: int = 5


def open_stages(stages: pd.DataFrame) -> pd.DataFrame:
    return stages[~(stages.is_won | stages.is_lost)]


def funnel(
    snapshot: pd.DataFrame, stages: pd.DataFrame, *, as_of_date: pd.Timestamp
) -> pd.DataFrame:
    """Open deals by stage and scope: count, amount, weighted amount (amount × probability).

    Every open stage of a scope's pipeline has a row, zero when empty, so charts keep their shape.
    """
    open_deals = snapshot[snapshot.status.eq("open")]
    counted = per_scope(
        open_deals,
        ["pipeline", "stage"],
        lambda g: g.agg(
            open_count=("opportunity_id", "size"),
            open_amount=("amount", "sum"),
            weighted_amount=("weighted_amount", "sum"),
        ),
    )
    grid = (
        counted[["scope_kind", "scope_id", "pipeline"]]
        .drop_duplicates()
        .merge(open_stages(stages)[["pipeline", "stage", "stage_order"]])
    )
    out = grid.merge(counted, how="left", on=["scope_kind", "scope_id", "pipeline", "stage"])
    out[["open_count", "open_amount", "weighted_amount"]] = out[
        ["open_count", "open_amount", "weighted_amount"]
    ].fillna(0)
    out["open_count"] = out.open_count.astype("int64")
    out.insert(0, "as_of_date", as_of_date)
    return out.sort_values(["scope_kind", "scope_id", "pipeline", "stage_order"]).reset_index(
        drop=True
    )


def stage_cohorts(
    opportunities: pd.DataFrame,
    entries: pd.DataFrame,
    intervals: pd.DataFrame,
    stages: pd.DataFrame,
    *,
    day_end: pd.Timestamp,
) -> pd.DataFrame:
    """One row per deal, open stage and funnel: when it entered and what became of it there."""
    opp = opportunities.set_index("opportunity_id")
    known = entries[entries.entered_at < day_end].merge(
        stages[["pipeline", "stage", "stage_order", "is_won", "is_lost"]], how="inner"
    )
    status = opp.status.where(opp.closed_at.lt(day_end), "open")
    # a won deal passed every stage, whether or not the CRM recorded the win as a stage change
    won_order = stages[stages.is_won].set_index("pipeline").stage_order
    reached = known[~known.is_lost].groupby("opportunity_id").stage_order.max()
    won = status.reindex(reached.index).eq("won")
    reached = reached.where(~won, opp.pipeline.reindex(reached.index).map(won_order))
    status = status.reindex(reached.index)

    strict = (
        known[~(known.is_won | known.is_lost)]
        .groupby(["opportunity_id", "pipeline", "stage", "stage_order"], as_index=False)
        .entered_at.min()
    )
    strict["funnel"] = "strict"

    # any_stage: every open stage up to the furthest reached, entered when the deal first
    # reached it or anything beyond it
    stage_grid = open_stages(stages)[["pipeline", "stage", "stage_order"]]
    firsts = (
        known[~known.is_lost]
        .groupby(["opportunity_id", "pipeline", "stage_order"], as_index=False)
        .entered_at.min()
    )
    firsts = firsts.sort_values(["opportunity_id", "stage_order"], ascending=[True, False])
    firsts["entered_at"] = firsts.groupby("opportunity_id").entered_at.cummin()
    deals = firsts[["opportunity_id", "pipeline"]].drop_duplicates()
    passed = deals.merge(stage_grid, on="pipeline")
    passed = passed[passed.stage_order <= passed.opportunity_id.map(reached)]
    passed = pd.merge_asof(
        passed.sort_values("stage_order"),
        firsts.sort_values("stage_order")[["opportunity_id", "stage_order", "entered_at"]],
        on="stage_order",
        by="opportunity_id",
        direction="forward",
    )
    passed["funnel"] = "any_stage"

    cohorts = pd.concat([strict, passed], ignore_index=True)
    furthest = cohorts.opportunity_id.map(reached)
    final = cohorts.opportunity_id.map(status)
    cohorts["advanced"] = furthest > cohorts.stage_order
    cohorts["won"] = final.eq("won")
    cohorts["lost"] = final.eq("lost") & ~cohorts.advanced
    cohorts["still_open"] = ~cohorts.advanced & ~cohorts.lost
    cohorts["amount"] = cohorts.opportunity_id.map(opp.amount).fillna(0.0)

    finished = intervals[(intervals.exit_kind != "open") & (intervals.exited_at < day_end)]
    days = finished.groupby(["opportunity_id", "stage"]).duration_days.sum()
    cohorts["days_in_stage"] = pd.Series(
        days.reindex(pd.MultiIndex.from_frame(cohorts[["opportunity_id", "stage"]])).to_numpy(),
        index=cohorts.index,
    )
    return cohorts


def _conversion_aggregate(grouped: pd.core.groupby.DataFrameGroupBy) -> pd.DataFrame:
    out = grouped.agg(
        entered=("advanced", "size"),
        advanced=("advanced", "sum"),
        won=("won", "sum"),
        lost=("lost", "sum"),
        still_open=("still_open", "sum"),
        amount_entered=("amount", "sum"),
        amount_advanced=("amount_if_advanced", "sum"),
        amount_lost=("amount_if_lost", "sum"),
        median_days=("days_in_stage", "median"),
    )
    quantiles = grouped.days_in_stage.quantile([0.75, 0.9]).unstack()
    out["p75_days"] = quantiles[0.75]
    out["p90_days"] = quantiles[0.9]
    return out


def stage_conversion(
    cohorts: pd.DataFrame,
    opportunities: pd.DataFrame,
    accounts: pd.DataFrame,
    stages: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
    timezone: str,
    rules: ConversionRules,
) -> pd.DataFrame:
    """mart_stage_conversion for the recent weeks, months and quarters, per scope and cut."""
    opp = opportunities.set_index("opportunity_id")
    # each cohort row's deal, looked up once for all its columns
    deal = opp[["owner_id", "team_id", "territory_id", "lead_source", "competitor", "account_id"]]
    deal = deal.reindex(cohorts.opportunity_id).set_axis(cohorts.index)
    deal["industry"] = deal.account_id.map(accounts.set_index("account_id").industry)
    # the grouping keys as categories, made once: thirty groupings below would otherwise each
    # hash the same text again (and the deal id, counted but never grouped on, is left out)
    text_keys = ["pipeline", "stage", "funnel", "owner_id", "team_id", "territory_id", *CUTS]
    base = pd.concat(
        [cohorts.drop(columns="opportunity_id"), deal.drop(columns="account_id")], axis=1
    )
    base = base.astype({key: "category" for key in text_keys}).assign(
        amount_if_advanced=cohorts.amount.where(cohorts.advanced, 0.0),
        amount_if_lost=cohorts.amount.where(cohorts.lost, 0.0),
        entered_local=local_time(cohorts.entered_at, timezone),
    )
    keys = [
        "period_kind",
        "period_start",
        "dimension",
        "dimension_value",
        "funnel",
        "pipeline",
        "stage",
        "stage_order",
    ]
    parts = []
    for period_kind, count in (
        ("week", rules.weeks),
        ("month", rules.months),
        ("quarter", rules.quarters),
    ):
        # trailing periods before the window feed the benchmark of the window's first periods
        earliest = recent_period_starts(as_of_date, period_kind, count + rules.trailing_periods)
        window = base[
            (base.entered_local >= earliest)
            & (base.entered_local < as_of_date + pd.Timedelta(days=1))
        ]
        window = window.assign(period_start=period_start(window.entered_local, period_kind))
        fixed = {"period_kind": period_kind, "dimension": "all", "dimension_value": "all"}
        parts.append(per_scope(window, keys, _conversion_aggregate, fixed=fixed))
        # cuts by lead source, industry and competitor: for the company and each team
        for cut in CUTS:
            frame = window.assign(dimension_value=window[cut])
            parts.append(
                per_scope(
                    frame[frame.dimension_value.notna()],
                    keys,
                    _conversion_aggregate,
                    scopes=CUT_SCOPES,
                    fixed={"period_kind": period_kind, "dimension": cut},
                )
            )
    out = pd.concat(parts, ignore_index=True)
    text_out = ["scope_id", "dimension_value", "pipeline", "stage", "funnel"]
    out = out.astype({key: "str" for key in text_out})
    out = _rates_and_bottlenecks(out, stages, rules)
    # the trailing periods only fed the benchmarks: keep the window
    first_kept = {
        kind: recent_period_starts(as_of_date, kind, getattr(rules, f"{kind}s"))
        for kind in ("week", "month", "quarter")
    }
    out = out[out.period_start >= out.period_kind.map(first_kept)]
    out.insert(0, "as_of_date", as_of_date)
    return out.reset_index(drop=True)


def _trailing_sum(values: pd.Series, group_ids: pd.Series, n: int) -> pd.Series:
    """Sum of each row's previous `n` rows in its group (not the row itself); rows in order."""
    before = values.groupby(group_ids).cumsum() - values
    return before - before.groupby(group_ids).shift(n).fillna(0)


def _rates_and_bottlenecks(
    out: pd.DataFrame, stages: pd.DataFrame, rules: ConversionRules
) -> pd.DataFrame:
    decided = out.advanced + out.lost
    out["conversion_rate"] = (out.advanced / decided).where(decided > 0)
    amount_decided = out.amount_advanced + out.amount_lost
    out["amount_conversion_rate"] = (out.amount_advanced / amount_decided).where(amount_decided > 0)

    series = [
        "scope_kind",
        "scope_id",
        "period_kind",
        "dimension",
        "dimension_value",
        "funnel",
        "pipeline",
        "stage",
    ]
    out = out.assign(decided=decided).sort_values([*series, "period_start"]).reset_index(drop=True)
    grouped = out.groupby(series, sort=False)
    # the same series' previous periods (no look-ahead): pooled over the trailing window
    series_id = grouped.ngroup()
    trailing_adv = _trailing_sum(out.advanced, series_id, rules.trailing_periods)
    trailing_dec = _trailing_sum(out.decided, series_id, rules.trailing_periods)
    configured = (
        out[["pipeline", "stage"]]
        .merge(stages[["pipeline", "stage", "benchmark_rate"]], how="left")
        .benchmark_rate.to_numpy()
    )
    trailing_rate = (trailing_adv / trailing_dec).where(trailing_dec > 0)
    out["benchmark_rate"] = pd.Series(configured, index=out.index).fillna(trailing_rate)
    # one-sided exact binomial test: how likely is so few advancing if the benchmark held?
    p_value = binom.cdf(
        out.advanced, out.decided.clip(lower=0), out.benchmark_rate.fillna(0).clip(0, 1)
    )
    out["p_value"] = np.where(out.benchmark_rate.notna() & (out.decided > 0), p_value, np.nan)
    out["is_bottleneck"] = (out.p_value < rules.alpha) & (out.conversion_rate < out.benchmark_rate)
    previous_rate = grouped.conversion_rate.shift(1)
    out["change_vs_previous"] = out.conversion_rate - previous_rate
    out["is_anomaly"] = (
        out.period_kind.eq("week")
        & (out.decided >= rules.min_decided)
        & (out.change_vs_previous <= -rules.weekly_drop)
    )
    return out.drop(columns=["decided"])
