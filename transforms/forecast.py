"""Will we hit the target? Forecasts of the current and next two months and quarters, three
ways, and their accuracy once a period has closed.

- weighted: won so far + amount × configured stage probability of the open deals whose
  expected close date falls in the period (what most CRMs show);
- historical: won so far + amount × the stage's win rate learned from deals closed in a
  trailing window (shrunk toward the configured probability when the sample is small) × the
  chance the deal closes inside the period, learned from how long won deals took to close from
  that stage, given the time the deal has already spent in it;
- monte_carlo: every open deal won or not, and in which month, drawn from the historical
  probabilities; p10 / p50 / p90 of the period's bookings and the chance to reach the target.

All timestamps are naive UTC; periods are calendar months and quarters in the reporting time
zone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from transforms.scopes import SCOPES, local_time, per_scope, with_owner_scopes

METHODS = ("weighted", "historical", "monte_carlo")
# how far ahead the monthly outcome of a deal is drawn: enough to cover the next two quarters
MONTHS_AHEAD = 9
FORECAST_COLUMNS = [
    "as_of_date",
    "period_kind",
    "period_start",
    "period_end",
    "scope_kind",
    "scope_id",
    "method",
    "expected",
    "p10",
    "p50",
    "p90",
    "target",
    "won_to_date",
    "open_pipeline",
    "coverage",
    "gap",
    "p_hit_target",
]


@dataclass(frozen=True)
class ForecastRules:
    window_days: int = 365  # closed deals this recent teach the win rates and closing times
    prior_strength: float = 20.0  # deals' worth of weight the configured probability keeps
    min_closing_sample: int = 10  # fewer won deals than this: pool the stages' closing times
    draws: int = 2000
    seed: int = 2026
    chunk_deals: int = 2048
    # closed months whose forecasts a current run replays from history (mart_forecast_backtest)
    backtest_months: int = 6


def forecast_periods(as_of_date: pd.Timestamp) -> pd.DataFrame:
    """The current and next two months and quarters: period_kind, period_start, period_end
    (the last day), and month_offsets, the months ahead (0 = the as-of month) each covers."""
    rows = []
    for kind, freq in (("month", "M"), ("quarter", "Q")):
        current = pd.Period(as_of_date, freq)
        for ahead in range(3):
            period = current + ahead
            first = max(period.start_time, pd.Period(as_of_date, "M").start_time)
            months = pd.period_range(first, period.end_time, freq="M")
            offsets = [(m - pd.Period(as_of_date, "M")).n for m in months]
            rows.append(
                {
                    "period_kind": kind,
                    "period_start": period.start_time.normalize(),
                    "period_end": period.end_time.normalize(),
                    "month_offsets": offsets,
                }
            )
    return pd.DataFrame(rows)


def current_stays(entries: pd.DataFrame, moment: pd.Timestamp) -> pd.DataFrame:
    """Each deal's stage at `moment` and when it entered it: opportunity_id, stage, entered_at."""
    before = entries[entries.entered_at < moment]
    return before.groupby("opportunity_id", sort=False).last().reset_index()


def closed_in_window(deals: pd.DataFrame, moment: pd.Timestamp, window_days: int) -> pd.DataFrame:
    """Deals won or lost in the trailing window before `moment`."""
    closed = deals.status.isin(["won", "lost"]) & deals.closed_at.lt(moment)
    recent = deals.closed_at.ge(moment - pd.Timedelta(days=window_days))
    return deals[closed & recent]


def stage_win_rates(
    closed: pd.DataFrame, entries: pd.DataFrame, stages: pd.DataFrame, prior_strength: float
) -> pd.DataFrame:
    """Per open stage: of the closed deals that were ever in it, how many were won, and the
    win rate shrunk toward the configured probability: (won + k·p) / (closed + k)."""
    open_stages = stages[~stages.is_won & ~stages.is_lost][["pipeline", "stage", "probability"]]
    visited = entries.merge(closed[["opportunity_id", "status"]], on="opportunity_id")
    visited = visited.drop_duplicates(["opportunity_id", "stage"])
    counts = (
        visited.assign(won=visited.status.eq("won"))
        .groupby(["pipeline", "stage"])
        .agg(closed=("won", "size"), won=("won", "sum"))
        .reset_index()
    )
    rates = open_stages.merge(counts, on=["pipeline", "stage"], how="left").fillna(
        {"closed": 0, "won": 0}
    )
    rates["win_rate"] = (rates.won + prior_strength * rates.probability) / (
        rates.closed + prior_strength
    )
    return rates


def days_to_close(closed: pd.DataFrame, entries: pd.DataFrame) -> pd.DataFrame:
    """For won deals: days from the last entry into each open stage to the close."""
    won = closed[closed.status.eq("won")][["opportunity_id", "closed_at"]]
    stays = entries.merge(won, on="opportunity_id")
    stays = stays[stays.entered_at <= stays.closed_at].drop_duplicates(
        ["opportunity_id", "stage"], keep="last"
    )
    days = (stays.closed_at - stays.entered_at) / pd.Timedelta(days=1)
    return stays[["pipeline", "stage"]].assign(days=days.to_numpy())


def month_ends_in_days(as_of_date: pd.Timestamp, moment_local: pd.Timestamp) -> np.ndarray:
    """Days from the moment to the end of each of the next MONTHS_AHEAD months."""
    month = pd.Period(as_of_date, "M")
    ends = [(month + k).end_time.normalize() + pd.Timedelta(days=1) for k in range(MONTHS_AHEAD)]
    return np.array([(end - moment_local) / pd.Timedelta(days=1) for end in ends])


def closing_month_probabilities(
    open_deals: pd.DataFrame, closing: pd.DataFrame, horizons: np.ndarray, min_sample: int
) -> np.ndarray:
    """P(close in month k | the deal will be won), deals × MONTHS_AHEAD.

    The empirical distribution of days-to-close from the deal's stage, conditioned on the
    days it has already spent there: a deal 40 days into a stage only competes with won deals
    that stayed longer than 40 days. Past the longest `min_sample` stays, the tail is used.
    """
    out = np.zeros((len(open_deals), len(horizons)))
    pooled = np.sort(closing.days.to_numpy())
    groups = closing.groupby(["pipeline", "stage"]).days
    samples = {key: np.sort(values.to_numpy()) for key, values in groups}
    keys = list(zip(open_deals.pipeline, open_deals.stage))
    age = open_deals.days_in_stage.to_numpy(dtype=float)
    key_index = pd.Series(range(len(keys))).groupby(pd.Series(keys, dtype=object)).indices
    for key, rows in key_index.items():
        days = samples.get(key)
        if days is None or len(days) < min_sample:
            days = pooled
        if len(days) < min_sample:
            continue
        # condition on survival; clamp so at least min_sample stays remain longer
        ages = np.minimum(age[rows], days[-min_sample] - 1e-9)
        alive = len(days) - np.searchsorted(days, ages, side="right")
        bounds = ages[:, None] + np.concatenate([[0.0], horizons])[None, :]
        left = len(days) - np.searchsorted(days, bounds.ravel(), side="right")
        survival = left.reshape(bounds.shape) / alive[:, None]
        out[rows] = survival[:, :-1] - survival[:, 1:]
    return out


def monte_carlo_totals(
    amount: np.ndarray,
    month_probability: np.ndarray,
    group: np.ndarray,
    n_groups: int,
    period_months: list[list[int]],
    draws: int,
    seed: int,
    chunk: int,
) -> np.ndarray:
    """Simulated bookings per period × group × draw (float32).

    Each deal is drawn once per draw: won in month k with month_probability[k], otherwise not
    in the horizon. Deals are processed `chunk` at a time, so memory is the totals plus one
    chunk × draws block, whatever the number of deals.
    """
    rng = np.random.default_rng(seed)
    totals = np.zeros((len(period_months), n_groups, draws), dtype=np.float32)
    # a draw u falls in month k when cumulative[k-1] <= u < cumulative[k]; a period is a run
    # of months, so u books in it when it lies between the run's two bounds
    bounds = np.concatenate(
        [np.zeros((len(month_probability), 1)), np.cumsum(month_probability, axis=1)], axis=1
    ).astype(np.float32)
    runs = []
    for months in period_months:
        if list(months) != list(range(months[0], months[-1] + 1)):
            raise ValueError(f"a period's months must be consecutive, got {months}")
        runs.append((months[0], months[-1] + 1))
    order = np.argsort(group, kind="stable")
    # one chunk's scratch arrays, reused: allocating them per period took about 30 % of the time
    u = np.empty((min(chunk, len(order)), draws), dtype=np.float32)
    won, below = np.empty(u.shape, dtype=bool), np.empty(u.shape, dtype=bool)
    booked = np.empty(u.shape, dtype=np.float32)
    for start in range(0, len(order), chunk):
        rows = order[start : start + chunk]
        n = len(rows)
        rng.random(out=u[:n], dtype=np.float32)
        groups, first = np.unique(group[rows], return_index=True)
        value = amount[rows, None].astype(np.float32)
        for p, (low, high) in enumerate(runs):
            np.greater_equal(u[:n], bounds[rows, low, None], out=won[:n])
            np.less(u[:n], bounds[rows, high, None], out=below[:n])
            won[:n] &= below[:n]
            np.multiply(won[:n], value, out=booked[:n])  # the amount where won, else 0
            totals[p, groups] += np.add.reduceat(booked[:n], first, axis=0)
    return totals


def scope_members(deal_owner: pd.Series, users: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Each deal's group (its owner) and, per group, the scopes it adds to."""
    owners = pd.Index(deal_owner.fillna("").unique())
    group = owners.get_indexer(deal_owner.fillna(""))
    members = with_owner_scopes(pd.DataFrame({"owner_id": owners}), users)
    members["owner_id"] = members.owner_id.replace("", np.nan)
    return group, members


def target_by_scope(
    targets: pd.DataFrame, users: pd.DataFrame, periods: pd.DataFrame
) -> pd.DataFrame:
    """The target of each scope and period: its own row when the CRM has one, otherwise the sum
    of its reps' targets. A target counts in the periods it lies within: a quarter is the sum of
    its months' targets and of those set for the whole quarter (as CRMs that forecast by
    quarter set them), which no month holds. A target without an end is a month's."""
    start = pd.to_datetime(targets.period_start).dt.normalize()
    spans = targets.assign(
        period_start=start,
        period_end=pd.to_datetime(targets.period_end).fillna(start + pd.offsets.MonthEnd(0)),
    )
    reps = with_owner_scopes(
        spans[spans.scope_kind.eq("user")].rename(columns={"scope_id": "owner_id"}), users
    )
    summed = per_scope(
        reps, ["period_start", "period_end"], lambda g: g.amount.sum().to_frame("target")
    )
    own = spans.rename(columns={"amount": "target"})[
        ["scope_kind", "scope_id", "period_start", "period_end", "target"]
    ]
    own = own[own.scope_kind.isin(SCOPES)]
    both = pd.concat([own, summed], ignore_index=True).drop_duplicates(
        ["scope_kind", "scope_id", "period_start", "period_end"]
    )
    rows = []
    for period in periods.itertuples():
        inside = both.period_start.ge(period.period_start) & both.period_end.le(period.period_end)
        part = both[inside].groupby(["scope_kind", "scope_id"]).target.sum().reset_index()
        rows.append(part.assign(period_kind=period.period_kind, period_start=period.period_start))
    return pd.concat(rows, ignore_index=True)


def forecast(
    deals_then: pd.DataFrame,
    entries: pd.DataFrame,
    stages: pd.DataFrame,
    users: pd.DataFrame,
    targets: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
    moment: pd.Timestamp,
    timezone: str,
    rules: ForecastRules,
) -> pd.DataFrame:
    """mart_forecast for one as-of date from the deals as they were at `moment` (the day's
    end): three methods × current and next two months and quarters × every scope."""
    periods = forecast_periods(as_of_date)
    deals = deals_then.copy()
    deals["closed_local"] = local_time(deals.closed_at.where(deals.closed_at.lt(moment)), timezone)
    closed = closed_in_window(deals, moment, rules.window_days)
    rates = stage_win_rates(closed, entries, stages, rules.prior_strength)
    # in the order of their ids: each deal's draws follow from the data, not the row order
    # the warehouse gave (DuckDB and PostgreSQL give the same deals in other orders)
    open_deals = deals[deals.status.eq("open") & deals.amount.notna()].sort_values(
        "opportunity_id", kind="stable"
    )
    stays = current_stays(entries, moment).set_index("opportunity_id").entered_at
    entered = open_deals.opportunity_id.map(stays)
    open_deals["days_in_stage"] = ((moment - entered) / pd.Timedelta(days=1)).fillna(0)
    open_deals = open_deals.merge(
        rates[["pipeline", "stage", "win_rate"]], on=["pipeline", "stage"], how="left"
    )
    open_deals["win_rate"] = open_deals.win_rate.fillna(open_deals.probability)
    horizons = month_ends_in_days(as_of_date, local_time(pd.Series([moment]), timezone).iat[0])
    timing = closing_month_probabilities(
        open_deals, days_to_close(closed, entries), horizons, rules.min_closing_sample
    )
    month_probability = timing * open_deals.win_rate.to_numpy()[:, None]

    group, members = scope_members(open_deals.owner_id, users)
    period_months = periods.month_offsets.tolist()
    expected = np.stack([month_probability[:, m].sum(axis=1) for m in period_months], axis=1)
    close_local = pd.to_datetime(open_deals.expected_close_date)
    amount = open_deals.amount.to_numpy()
    won = deals[deals.status.eq("won") & deals.closed_local.notna()]
    # owners' scopes mapped once; each period only changes the values summed
    open_scoped = with_owner_scopes(open_deals[["owner_id"]].reset_index(drop=True), users)
    won_scoped = with_owner_scopes(won[["owner_id"]].reset_index(drop=True), users)
    measures = ["weighted", "historical", "open_pipeline", "won_to_date"]
    rows = []
    for p, period in enumerate(periods.itertuples()):
        in_period = close_local.between(period.period_start, period.period_end).to_numpy()
        won_in_period = won.closed_local.between(
            period.period_start, period.period_end + pd.Timedelta(days=1), inclusive="left"
        ).to_numpy()
        scoped = pd.concat(
            [
                open_scoped.assign(
                    weighted=amount * open_deals.probability.to_numpy() * in_period,
                    historical=amount * expected[:, p],
                    open_pipeline=amount,
                    won_to_date=0.0,
                ),
                won_scoped[won_in_period].assign(
                    weighted=0.0,
                    historical=0.0,
                    open_pipeline=0.0,
                    won_to_date=won.amount.fillna(0).to_numpy()[won_in_period],
                ),
            ],
            ignore_index=True,
        )
        sums = per_scope(scoped, [], lambda g: g[measures].sum())
        rows.append(
            sums.assign(
                period_kind=period.period_kind,
                period_start=period.period_start,
                period_end=period.period_end,
            )
        )
    sums = pd.concat(rows, ignore_index=True)

    simulated = monte_carlo_totals(
        amount,
        month_probability,
        group,
        len(members),
        period_months,
        rules.draws,
        rules.seed,
        rules.chunk_deals,
    )
    keys = ["period_kind", "period_start", "scope_kind", "scope_id"]
    table = sums.merge(target_by_scope(targets, users, periods), on=keys, how="left")
    quantiles = simulated_scopes(simulated, members, periods, table.set_index(keys))
    return _forecast_rows(table.merge(quantiles, on=keys, how="left"), as_of_date)


def simulated_scopes(
    simulated: np.ndarray, members: pd.DataFrame, periods: pd.DataFrame, goals: pd.DataFrame
) -> pd.DataFrame:
    """Quantiles of simulated bookings per period and scope (scopes summed from their owners),
    and the share of draws in which won_to_date plus the draw reaches the target (`goals`:
    won_to_date and target by period_kind, period_start, scope_kind and scope_id). The draws
    themselves are let go: scopes x periods x draws would be the largest array of the
    forecast."""
    rows = []
    for kind, column in SCOPES.items():
        ids = pd.Series("all", index=members.index) if column is None else members[column]
        known = ids.notna().to_numpy()
        codes, names = pd.factorize(ids[known])
        names = names.astype(str)
        # owners summed into their scopes as one sparse product (np.add.at adds row by row)
        in_scope = sparse.csr_array(
            (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(names), len(codes))
        )
        for p, period in enumerate(periods.itertuples()):
            by_scope = in_scope @ simulated[p][known].astype(np.float64)
            q10, q50, q90 = np.quantile(by_scope, [0.1, 0.5, 0.9], axis=1)
            goal = goals.reindex(
                pd.MultiIndex.from_product(
                    [[period.period_kind], [period.period_start], [kind], names]
                )
            )
            won = goal.won_to_date.to_numpy(dtype="float64", na_value=np.nan)
            target = goal.target.to_numpy(dtype="float64", na_value=np.nan)
            reached = (won[:, None] + by_scope >= target[:, None]).mean(axis=1)
            rows.append(
                pd.DataFrame(
                    {
                        "period_kind": period.period_kind,
                        "period_start": period.period_start,
                        "scope_kind": kind,
                        "scope_id": names,
                        "mc_mean": by_scope.mean(axis=1),
                        "p10": q10,
                        "p50": q50,
                        "p90": q90,
                        "p_hit_target": np.where(np.isnan(target), np.nan, reached),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)


def _forecast_rows(table: pd.DataFrame, as_of_date: pd.Timestamp) -> pd.DataFrame:
    """One row per method with target, coverage, gap and, for monte_carlo, the quantiles."""
    table = table.fillna({"mc_mean": 0.0, "p10": 0.0, "p50": 0.0, "p90": 0.0})
    won = table.won_to_date
    remaining = (table.target - won).clip(lower=0)
    base = table.assign(
        as_of_date=as_of_date,
        coverage=(table.open_pipeline / remaining).where(remaining > 0),
    )
    parts = []
    for method in METHODS:
        part = base.copy()
        part["method"] = method
        if method == "monte_carlo":
            part["expected"] = won + table.mc_mean
            for q in ("p10", "p50", "p90"):
                part[q] = won + table[q]
            part["p_hit_target"] = table.p_hit_target
        else:
            part["expected"] = won + table[method]
            part[["p10", "p50", "p90", "p_hit_target"]] = np.nan
        part["gap"] = part.target - part.expected
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    return out[FORECAST_COLUMNS].sort_values(
        ["period_kind", "period_start", "scope_kind", "scope_id", "method"], ignore_index=True
    )


def backtest_moments(
    as_of_date: pd.Timestamp, periods: int, leads: int = 3
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """(forecast as-of date, month forecast) for the last `periods` closed months, forecast on
    the month's first day and on the first days of the two months before (how many months
    ahead each was, backtest_cases reads from the scored rows)."""
    this_month = pd.Period(as_of_date, "M")
    out = []
    for back in range(periods, 0, -1):
        month = this_month - back
        for ahead in range(leads):
            made = (month - ahead).start_time.normalize()
            out.append((made, month.start_time.normalize()))
    return out


def backtest_cases(scored: pd.DataFrame) -> pd.DataFrame:
    """The replayed forecasts as scored (mart_forecast_accuracy's rows), with the months
    between each forecast and its month, and the accuracy of the company's."""

    def month_number(days: pd.Series) -> pd.Series:
        days = pd.to_datetime(days)
        return days.dt.year * 12 + days.dt.month

    ahead = month_number(scored.period_start) - month_number(scored.forecast_as_of)
    company = scored.accuracy.where(scored.scope_kind.eq("company"))
    return scored.assign(months_ahead=ahead, company_accuracy=company)


def backtest_summary(cases: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per method and months ahead over every scope with bookings, the median bias,
    and how often the monte_carlo p10–p90 interval held the actual."""
    scored = cases[cases.actual > 0]
    inside = scored.actual.between(scored.p10, scored.p90)
    summary = (
        scored.assign(inside=inside.where(scored.method.eq("monte_carlo")))
        .groupby(["method", "months_ahead"])
        .agg(
            cases=("accuracy", "size"),
            accuracy=("accuracy", "mean"),
            company_accuracy=("company_accuracy", "mean"),
            median_bias=("bias", "median"),
            p10_p90_coverage=("inside", "mean"),
        )
        .reset_index()
    )
    return summary
