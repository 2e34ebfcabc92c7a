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

from transforms.scopes import SCOPES, local_time, per_scope, period_start, recent_period_starts

CUTS = ("lead_source", "industry", "competitor")
# the cuts are read for the company and each team
CUT_SCOPES = ("company", "team")


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


COUNTED = ("advanced", "won", "lost", "still_open")
DAY_QUANTILES = {"median_days": 0.5, "p75_days": 0.75, "p90_days": 0.9}


@dataclass(frozen=True)
class _Coded:
    """Grouping columns as one integer code per row (-1 where a column is missing) and the
    labels each code stands for (that row of `labels`)."""

    codes: np.ndarray
    labels: pd.DataFrame

    @classmethod
    def of(cls, name: str, values: pd.Series) -> _Coded:
        codes, labels = pd.factorize(values)
        return cls(codes, pd.DataFrame({name: np.asarray(labels)}))

    @classmethod
    def constant(cls, name: str, size: int, label: object) -> _Coded:
        return cls(np.zeros(size, dtype="int64"), pd.DataFrame({name: [label]}))

    @classmethod
    def combined(cls, keys: list[_Coded], rows: np.ndarray | None = None) -> _Coded:
        """The combinations of `keys` found at positions `rows` (all rows if None), coded
        alike: the codes fold into one number per row, so grouping costs one integer sort
        rather than hashing text columns."""
        codes = [key.codes if rows is None else key.codes[rows] for key in keys]
        missing = np.logical_or.reduce([code < 0 for code in codes])
        folded = np.zeros(len(missing), dtype="int64")
        for key, code in zip(keys, codes, strict=True):
            folded = folded * len(key.labels) + code
        folded[missing] = -1
        found, combined = np.unique(folded, return_inverse=True)
        if missing.any():  # -1 sorts first
            found, combined = found[1:], combined - 1
        labels = []
        for key in reversed(keys):  # the last key folded in is the remainder
            found, code = np.divmod(found, len(key.labels))
            labels.append(key.labels.iloc[code].reset_index(drop=True))
        return cls(combined, pd.concat(labels[::-1], axis=1))


@dataclass(frozen=True)
class _CohortMeasures:
    """What each cohort row adds to its groups, as arrays: the counts and amounts summed, and
    its days in stage ranked once across all rows, so a grouping's quantiles take one sort of
    integers instead of a sort by group and value."""

    summed: dict[str, np.ndarray]  # mart column -> each row's part of it
    days_rank: np.ndarray  # the row's position in days_ordered; -1 when not finished
    days_ordered: np.ndarray

    @classmethod
    def of(cls, cohorts: pd.DataFrame) -> _CohortMeasures:
        amount = cohorts.amount.to_numpy(dtype="float64")
        flags = {name: cohorts[name].to_numpy(dtype=bool) for name in COUNTED}
        summed = {
            **flags,
            "amount_entered": amount,
            "amount_advanced": np.where(flags["advanced"], amount, 0.0),
            "amount_lost": np.where(flags["lost"], amount, 0.0),
        }
        days = cohorts.days_in_stage.to_numpy(dtype="float64")
        order = np.argsort(days, kind="stable")  # unfinished stays (NaN) sort last
        finished = int(np.count_nonzero(~np.isnan(days)))
        rank = np.empty(len(days), dtype="int64")
        rank[order] = np.arange(len(days))
        return cls(summed, np.where(rank < finished, rank, -1), days[order[:finished]])

    def quantiles(self, rows: np.ndarray, group: np.ndarray, size: int) -> dict[str, np.ndarray]:
        """Each group's DAY_QUANTILES of its finished stays, interpolated linearly as pandas
        does (NaN for a group with none)."""
        rank = self.days_rank[rows]
        ranked = rank >= 0
        total = max(len(self.days_ordered), 1)
        by_group = np.sort(group[ranked] * total + rank[ranked])
        ordered = self.days_ordered[by_group % total]
        counts = np.bincount(by_group // total, minlength=size)
        starts = np.cumsum(counts) - counts
        top = (counts - 1).clip(min=0)
        last = max(len(ordered) - 1, 0)
        padded = ordered if len(ordered) else np.zeros(1)
        out = {}
        for name, q in DAY_QUANTILES.items():
            position = q * top
            below = np.floor(position).astype("int64")
            low = padded[np.minimum(starts + below, last)]
            high = padded[np.minimum(starts + np.minimum(below + 1, top), last)]
            out[name] = np.where(counts > 0, low + (high - low) * (position - below), np.nan)
        return out


def _cohort_totals(rows: np.ndarray, keys: list[_Coded], measures: _CohortMeasures) -> pd.DataFrame:
    """Counts, sums and days-in-stage quantiles of the cohort rows at positions `rows`, per
    combination of `keys` (their label columns first); rows missing a key are left out."""
    key = _Coded.combined(keys, rows)
    kept = key.codes >= 0
    rows, group, size = rows[kept], key.codes[kept], len(key.labels)
    totals = {"entered": np.bincount(group, minlength=size)}
    for name, values in measures.summed.items():
        summed = np.bincount(group, weights=values[rows], minlength=size)
        totals[name] = summed.astype("int64") if name in COUNTED else summed
    totals |= measures.quantiles(rows, group, size)
    return pd.concat([key.labels, pd.DataFrame(totals)], axis=1)


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
    deal = deal.reindex(cohorts.opportunity_id)
    deal["industry"] = deal.account_id.map(accounts.set_index("account_id").industry)
    size = len(cohorts)
    # every grouping column coded once, for the thirty groupings below
    scopes = {
        kind: _Coded.constant("scope_id", size, "all")
        if column is None
        else _Coded.of("scope_id", deal[column])
        for kind, column in SCOPES.items()
    }
    dimensions = {"all": _Coded.constant("dimension_value", size, "all")} | {
        cut: _Coded.of("dimension_value", deal[cut]) for cut in CUTS
    }
    stage_cells = _Coded.combined(
        [_Coded.of(name, cohorts[name]) for name in ("funnel", "pipeline", "stage", "stage_order")]
    )
    measures = _CohortMeasures.of(cohorts)
    entered_local = local_time(cohorts.entered_at, timezone)
    parts = []
    for period_kind, count in (
        ("week", rules.weeks),
        ("month", rules.months),
        ("quarter", rules.quarters),
    ):
        # trailing periods before the window feed the benchmark of the window's first periods
        earliest = recent_period_starts(as_of_date, period_kind, count + rules.trailing_periods)
        window = (entered_local >= earliest) & (entered_local < as_of_date + pd.Timedelta(days=1))
        periods = _Coded.of("period_start", period_start(entered_local.where(window), period_kind))
        cells = _Coded.combined([periods, stage_cells])
        rows = np.flatnonzero(cells.codes >= 0)
        # every scope for all deals; the cuts by lead source, industry and competitor for the
        # company and each team
        for dimension, values in dimensions.items():
            for kind in SCOPES if dimension == "all" else CUT_SCOPES:
                part = _cohort_totals(rows, [scopes[kind], values, cells], measures)
                parts.append(
                    part.assign(scope_kind=kind, period_kind=period_kind, dimension=dimension)
                )
    out = pd.concat(parts, ignore_index=True)
    leading = [
        "scope_kind",
        "scope_id",
        "period_kind",
        "period_start",
        "dimension",
        "dimension_value",
        "funnel",
        "pipeline",
        "stage",
        "stage_order",
    ]
    out = out[leading + [c for c in out.columns if c not in leading]]
    text_out = ["scope_id", "dimension_value", "pipeline", "stage", "funnel"]
    out = out.astype({key: "str" for key in text_out} | {"stage_order": "int64"})
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
