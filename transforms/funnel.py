"""Where deals convert and where they leak: mart_stage_conversion (mart_funnel is
sql/marts/mart_funnel.sql).

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

from transforms.keys import positions
from transforms.scopes import SCOPES, local_time, period_start, recent_period_starts

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


def stage_cohorts(
    opportunities: pd.DataFrame,
    entries: pd.DataFrame,
    intervals: pd.DataFrame,
    stages: pd.DataFrame,
    *,
    day_end: pd.Timestamp,
) -> pd.DataFrame:
    """One row per deal, open stage and funnel: when it entered and what became of it there.

    Deals are numbered by their row in `opportunities` and stages by their row in `stages`,
    so every step below is integer arithmetic; text columns are put back at the end."""
    deals = opportunities.reset_index(drop=True)
    stages = stages.reset_index(drop=True)
    known = entries[entries.entered_at < day_end]
    deal = positions(known.opportunity_id, deals.opportunity_id)
    stage = _stage_rows(known, stages)
    kept = (deal >= 0) & (stage >= 0)  # a deal of the day, in a configured stage
    deal, stage = deal[kept], stage[kept]
    entered = known.entered_at.to_numpy()[kept]
    order = stages.stage_order.to_numpy()[stage]
    is_won, is_lost = stages.is_won.to_numpy()[stage], stages.is_lost.to_numpy()[stage]

    closed = deals.closed_at.lt(day_end).to_numpy()
    won_deal = closed & deals.status.eq("won").to_numpy(dtype=bool, na_value=False)
    lost_deal = closed & deals.status.eq("lost").to_numpy(dtype=bool, na_value=False)
    # the furthest stage reached; a won deal passed every stage, whether or not the CRM
    # recorded the win as a stage change
    width = int(stages.stage_order.max()) + 1
    reached = np.full(len(deals), -1, dtype="int64")
    np.maximum.at(reached, deal[~is_lost], order[~is_lost])
    won_order = stages[stages.is_won].set_index("pipeline").stage_order
    won_order = deals.pipeline.map(won_order).fillna(-1).to_numpy(dtype="int64")
    reached = np.where((reached >= 0) & won_deal, won_order, reached)

    # strict: a deal's first entry into each open stage it was recorded in
    is_open = ~(is_won | is_lost)
    strict_deal, strict_stage, strict_entered = _first_entries(
        deal[is_open], stage[is_open], entered[is_open], len(stages)
    )

    # any_stage: every open stage up to the furthest reached, entered when the deal first
    # reached it or anything beyond it
    first_deal, first_stage, first_entered = _first_entries(
        deal[~is_lost], stage[~is_lost], entered[~is_lost], len(stages)
    )
    never = np.iinfo("int64").max
    first_at = np.full((len(deals), width), never, dtype="int64")
    np.minimum.at(
        first_at, (first_deal, _order_of(stages, first_stage)), first_entered.view("int64")
    )
    from_here_on = np.minimum.accumulate(first_at[:, ::-1], axis=1)[:, ::-1]
    passed_deal, passed_stage = _stages_passed(first_deal, first_stage, reached, stages)
    passed_entered = from_here_on[passed_deal, _order_of(stages, passed_stage)]
    passed_entered = np.where(passed_entered == never, np.iinfo("int64").min, passed_entered)

    deal = np.concatenate([strict_deal, passed_deal])
    stage = np.concatenate([strict_stage, passed_stage])
    furthest = reached[deal]
    order = _order_of(stages, stage)
    # millions of rows of a few labels: the stage cell's text as categoricals, their
    # categories in text order so that stage conversion's cells sort as they did on text
    cohorts = pd.DataFrame(
        {
            "opportunity_id": deals.opportunity_id.take(deal).array,
            "pipeline": pd.Categorical(stages.pipeline).take(stage),
            "stage": pd.Categorical(stages.stage).take(stage),
            "stage_order": order,
            "entered_at": np.concatenate([strict_entered.view("int64"), passed_entered]).view(
                entered.dtype
            ),
            "funnel": pd.Categorical.from_codes(
                np.repeat([1, 0], [len(strict_deal), len(passed_deal)]),
                categories=pd.Index(["any_stage", "strict"], dtype="str"),
            ),
        }
    )
    cohorts["advanced"] = furthest > order
    cohorts["won"] = won_deal[deal]
    cohorts["lost"] = lost_deal[deal] & ~cohorts.advanced.to_numpy()
    cohorts["still_open"] = ~cohorts.advanced & ~cohorts.lost
    cohorts["amount"] = np.nan_to_num(deals.amount.to_numpy(dtype="float64")[deal])
    cohorts["days_in_stage"] = _days_in_stage(intervals, deals, stages, day_end)[
        deal * len(stages) + stage
    ]
    return cohorts


def _order_of(stages: pd.DataFrame, stage: np.ndarray) -> np.ndarray:
    return stages.stage_order.to_numpy(dtype="int64")[stage]


def _stage_rows(frame: pd.DataFrame, stages: pd.DataFrame) -> np.ndarray:
    """Each row's (pipeline, stage) as its row in `stages` (-1: not a configured stage),
    looked up once per distinct pair rather than once per row."""
    pairs = pd.MultiIndex.from_arrays([frame.pipeline, frame.stage])
    codes = pairs.codes[0].astype("int64") * len(pairs.levels[1]) + pairs.codes[1]
    found, inverse = np.unique(codes, return_inverse=True)
    distinct = pd.MultiIndex.from_arrays(
        [
            pairs.levels[0].take(found // len(pairs.levels[1])),
            pairs.levels[1].take(found % len(pairs.levels[1])),
        ]
    )
    rows = pd.MultiIndex.from_frame(stages[["pipeline", "stage"]]).get_indexer(distinct)
    missing = (pairs.codes[0] < 0) | (pairs.codes[1] < 0)
    return np.where(missing, -1, rows[inverse.reshape(-1)])


def _first_entries(
    deal: np.ndarray, stage: np.ndarray, entered: np.ndarray, stage_count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first entry of each (deal, stage) pair, pairs in deal then stage order."""
    key = deal * stage_count + stage
    first = pd.Series(entered).groupby(key, sort=True).min()
    keys = first.index.to_numpy()
    return keys // stage_count, keys % stage_count, first.to_numpy()


def _stages_passed(
    deal: np.ndarray, stage: np.ndarray, reached: np.ndarray, stages: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """Every open stage of each (deal, pipeline) found in (deal, stage) up to the deal's
    furthest stage reached."""
    pipeline = pd.factorize(stages.pipeline)[0]
    pair = np.unique(deal * (pipeline.max() + 1) + pipeline[stage])
    pair_deal, pair_pipeline = np.divmod(pair, pipeline.max() + 1)
    is_open = ~(stages.is_won | stages.is_lost).to_numpy()
    passed_deal, passed_stage = [], []
    for code in np.unique(pair_pipeline):  # a few pipelines
        grid = np.flatnonzero(is_open & (pipeline == code))
        grid = grid[np.argsort(stages.stage_order.to_numpy()[grid], kind="stable")]
        of_pipeline = pair_deal[pair_pipeline == code]
        each_deal = np.repeat(of_pipeline, len(grid))
        each_stage = np.tile(grid, len(of_pipeline))
        reachable = _order_of(stages, each_stage) <= reached[each_deal]
        passed_deal.append(each_deal[reachable])
        passed_stage.append(each_stage[reachable])
    if not passed_deal:  # no deal entered a stage
        return deal[:0], stage[:0]
    return np.concatenate(passed_deal), np.concatenate(passed_stage)


def _days_in_stage(
    intervals: pd.DataFrame, deals: pd.DataFrame, stages: pd.DataFrame, day_end: pd.Timestamp
) -> np.ndarray:
    """Days each deal spent in each stage over its finished stays by `day_end`, indexed by
    deal row × len(stages) + stage row (NaN where it finished none)."""
    finished = intervals[(intervals.exit_kind != "open") & (intervals.exited_at < day_end)]
    deal = positions(finished.opportunity_id, deals.opportunity_id)
    stage = _stage_rows(finished, stages)
    kept = (deal >= 0) & (stage >= 0)
    key = deal[kept] * len(stages) + stage[kept]
    size = len(deals) * len(stages)
    duration = finished.duration_days.to_numpy(dtype="float64")[kept]
    total = np.bincount(key, weights=np.nan_to_num(duration), minlength=size)
    return np.where(np.bincount(key, minlength=size) > 0, total, np.nan)


COUNTED = ("advanced", "won", "lost", "still_open")
DAY_QUANTILES = {"median_days": 0.5, "p75_days": 0.75, "p90_days": 0.9}
STAGE_CELL = ["funnel", "pipeline", "stage", "stage_order"]
# mart_stage_conversion after as_of_date
MART_COLUMNS = [
    "scope_kind",
    "scope_id",
    "period_kind",
    "period_start",
    "dimension",
    "dimension_value",
    *STAGE_CELL,
    "entered",
    *COUNTED,
    "amount_entered",
    "amount_advanced",
    "amount_lost",
    *DAY_QUANTILES,
    "conversion_rate",
    "amount_conversion_rate",
    "benchmark_rate",
    "p_value",
    "is_bottleneck",
    "change_vs_previous",
    "is_anomaly",
]


@dataclass(frozen=True)
class _Coded:
    """A grouping column as an integer code per row (-1 where missing) and the labels the
    codes stand for, sorted, so codes order as their labels do."""

    codes: np.ndarray
    labels: np.ndarray

    # 32 bits: a code per cohort row (tens of millions at scale 100), of a few thousand labels
    @classmethod
    def of(cls, values: pd.Series) -> _Coded:
        codes, labels = pd.factorize(values, sort=True)
        return cls(np.asarray(codes, dtype="int32"), np.asarray(labels))

    @classmethod
    def constant(cls, size: int, label: str) -> _Coded:
        return cls(np.zeros(size, dtype="int32"), np.array([label], dtype=object))

    def at(self, rows: np.ndarray) -> _Coded:
        """The codes of the rows at `rows` (-1: no row)."""
        return _Coded(np.where(rows >= 0, self.codes[rows], -1), self.labels)

    def take(self, rows: np.ndarray) -> _Coded:
        return _Coded(self.codes[rows], self.labels)


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
        rank = np.empty(len(days), dtype="int32")
        rank[order] = np.arange(len(days), dtype="int32")
        return cls(summed, np.where(rank < finished, rank, -1), days[order[:finished]])

    def take(self, rows: np.ndarray) -> _CohortMeasures:
        """The measures of the rows at `rows` (the ranks stay comparable)."""
        summed = {name: values[rows] for name, values in self.summed.items()}
        return _CohortMeasures(summed, self.days_rank[rows], self.days_ordered)

    def totals(
        self, group: np.ndarray, size: int, rows: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        """Per group (`group`: each row's, of the rows at `rows` or all): the counts, sums
        and days-in-stage quantiles."""
        out = {"entered": np.bincount(group, minlength=size)}
        for name, values in self.summed.items():
            weights = values if rows is None else values[rows]
            summed = np.bincount(group, weights=weights, minlength=size)
            out[name] = summed.astype("int64") if name in COUNTED else summed
        rank = self.days_rank if rows is None else self.days_rank[rows]
        return out | self._quantiles(rank, group, size)

    def _quantiles(self, rank: np.ndarray, group: np.ndarray, size: int) -> dict[str, np.ndarray]:
        """Each group's DAY_QUANTILES of its finished stays, interpolated linearly as pandas
        does (NaN for a group with none)."""
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


def _groups(folded: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's group number and each group's key, groups in key order, for keys in
    [0, space): counted when the key space is small, else sorted."""
    if space <= 4 * len(folded) + 4096:
        present = np.bincount(folded, minlength=space) > 0
        return (np.cumsum(present) - 1)[folded], np.flatnonzero(present)
    keys, group = np.unique(folded, return_inverse=True)
    return group, keys


def _previous_rows_sum(values: np.ndarray, series_start: np.ndarray, n: int) -> np.ndarray:
    """Each row's sum of the `n` rows before it in its series (rows in series order)."""
    before = np.concatenate([[0], np.cumsum(values)])  # before[i]: sum of values[:i]
    index = np.arange(len(values))
    return before[index] - before[np.maximum(index - n, series_start)]


def _conversion_series(
    scope: _Coded,
    dimension: _Coded,
    cells: _Coded,
    periods: _Coded,
    measures: _CohortMeasures,
    benchmarks: np.ndarray,
    rules: ConversionRules,
    *,
    weekly: bool,
) -> dict[str, np.ndarray]:
    """One scope kind's rows of mart_stage_conversion for one period kind and dimension (codes
    for scope_id, dimension_value and the stage cell), with their rates and tests, in series
    order: scope, dimension value, stage, then periods oldest first. Rows missing the scope or
    dimension are left out."""
    keys = [scope, dimension, cells, periods]  # the period folds in last: series are runs
    kept = np.logical_and.reduce([key.codes >= 0 for key in keys])
    rows = None if kept.all() else np.flatnonzero(kept)
    folded = np.zeros(len(kept) if rows is None else len(rows), dtype="int64")
    for key in keys:
        folded = folded * len(key.labels) + (key.codes if rows is None else key.codes[rows])
    group, found = _groups(folded, int(np.prod([len(key.labels) for key in keys])))
    size = len(found)
    out = measures.totals(group, size, rows)
    series, period_code = np.divmod(found, len(periods.labels))
    first_of_series = np.concatenate([[True], series[1:] != series[:-1]])
    series_start = np.maximum.accumulate(np.where(first_of_series, np.arange(size), 0))
    rest, out["stage_cell"] = np.divmod(series, len(cells.labels))
    out["scope_id"], out["dimension_value"] = np.divmod(rest, len(dimension.labels))
    out["period_start"] = periods.labels[period_code]

    decided = out["advanced"] + out["lost"]
    amount_decided = out["amount_advanced"] + out["amount_lost"]
    # the same series' previous periods (no look-ahead): pooled over the trailing window
    trailing_advanced = _previous_rows_sum(out["advanced"], series_start, rules.trailing_periods)
    trailing_decided = _previous_rows_sum(decided, series_start, rules.trailing_periods)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(decided > 0, out["advanced"] / decided, np.nan)
        out["conversion_rate"] = rate
        out["amount_conversion_rate"] = np.where(
            amount_decided > 0, out["amount_advanced"] / amount_decided, np.nan
        )
        trailing_rate = np.where(trailing_decided > 0, trailing_advanced / trailing_decided, np.nan)
    configured = benchmarks[out["stage_cell"]]
    benchmark = np.where(np.isnan(configured), trailing_rate, configured)
    out["benchmark_rate"] = benchmark
    # one-sided exact binomial test: how likely is so few advancing if the benchmark held?
    p_value = binom.cdf(out["advanced"], decided, np.nan_to_num(benchmark).clip(0, 1))
    out["p_value"] = np.where(~np.isnan(benchmark) & (decided > 0), p_value, np.nan)
    out["is_bottleneck"] = (out["p_value"] < rules.alpha) & (rate < benchmark)
    previous_rate = np.where(first_of_series, np.nan, np.roll(rate, 1))
    out["change_vs_previous"] = rate - previous_rate
    # a week-over-week drop
    out["is_anomaly"] = (
        weekly & (decided >= rules.min_decided) & (out["change_vs_previous"] <= -rules.weekly_drop)
    )
    return out


@dataclass
class _Part:
    """Rows of one grouping: numbers, and codes for its text columns with their labels."""

    columns: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


def _text_column(parts: list[_Part], name: str) -> pd.Categorical:
    """A text column from each part's codes, as a categorical: millions of rows of at most a
    few thousand labels (the warehouse stores it as text)."""
    labels = pd.Index(np.concatenate([part.labels[name] for part in parts])).unique()
    codes = [labels.get_indexer(part.labels[name])[part.columns.pop(name)] for part in parts]
    return pd.Categorical.from_codes(np.concatenate(codes), categories=labels.astype("str"))


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
    """mart_stage_conversion for the recent weeks, months and quarters, per scope and cut.

    Every grouping column is coded as integers once; each of the thirty groupings folds its
    codes into one number per cohort row and adds up with bincounts, and its rows come out in
    series order, so rates against earlier periods need no sort of the (millions of) rows."""
    size = len(cohorts)
    deals = opportunities.reset_index(drop=True)
    position = positions(cohorts.opportunity_id, deals.opportunity_id)
    deals = deals.assign(industry=deals.account_id.map(accounts.set_index("account_id").industry))
    scopes = {
        kind: _Coded.constant(size, "all")
        if column is None
        else _Coded.of(deals[column]).at(position)
        for kind, column in SCOPES.items()
    }
    dimensions = {"all": _Coded.constant(size, "all")} | {
        cut: _Coded.of(deals[cut]).at(position) for cut in CUTS
    }
    stage_cells = cohorts.groupby(STAGE_CELL, sort=True, observed=True)
    cells = _Coded(stage_cells.ngroup().to_numpy("int32"), np.arange(stage_cells.ngroups))
    cell_labels = stage_cells.size().index.to_frame(index=False)
    benchmarks = cell_labels.merge(
        stages[["pipeline", "stage", "benchmark_rate"]], how="left"
    ).benchmark_rate.to_numpy(dtype="float64")
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
        periods = _Coded.of(period_start(entered_local.where(window), period_kind))
        rows = np.flatnonzero(periods.codes >= 0)
        first_kept = recent_period_starts(as_of_date, period_kind, count)
        in_window = {
            "cells": cells.take(rows),
            "periods": periods.take(rows),
            "measures": measures.take(rows),
            "benchmarks": benchmarks,
            "rules": rules,
        }
        # every scope for all deals; the cuts by lead source, industry and competitor for the
        # company and each team
        for dimension, values in dimensions.items():
            for kind in SCOPES if dimension == "all" else CUT_SCOPES:
                columns = _conversion_series(
                    scopes[kind].take(rows),
                    values.take(rows),
                    **in_window,
                    weekly=period_kind == "week",
                )
                # the trailing periods only fed the benchmarks: keep the window
                keep = columns["period_start"] >= first_kept
                columns = {name: values[keep] for name, values in columns.items()}
                constant = {"scope_kind": kind, "period_kind": period_kind, "dimension": dimension}
                columns |= {name: np.zeros(keep.sum(), dtype="int8") for name in constant}
                labels = {name: np.array([label]) for name, label in constant.items()}
                labels |= {"scope_id": scopes[kind].labels, "dimension_value": values.labels}
                parts.append(_Part(columns, labels))
    cell = np.concatenate([part.columns.pop("stage_cell") for part in parts])
    columns = {}
    for name in MART_COLUMNS:  # one column at a time, each part's arrays freed as it goes
        if name == "stage_order":
            columns[name] = cell_labels[name].to_numpy()[cell]
        elif name in STAGE_CELL:
            columns[name] = pd.Categorical(cell_labels[name]).take(cell)
        elif name in parts[0].labels:
            columns[name] = _text_column(parts, name)
        else:
            columns[name] = np.concatenate([part.columns.pop(name) for part in parts])
    # the arrays as they are: consolidating them into one block would copy millions of rows
    out = pd.DataFrame(columns, copy=False)
    out.insert(0, "as_of_date", as_of_date)
    return out
