"""Every warehouse table of one run from the canonical state: the pure heart of a night."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from transforms.forecast import (
    ForecastRules,
    backtest_moments,
    bookings,
    forecast,
    forecast_accuracy,
)
from transforms.funnel import ConversionRules, stage_cohorts, stage_conversion
from transforms.health import TerritoryRules, handover, rebalancing, territory_load
from transforms.history import FieldChanges
from transforms.hygiene import account_match_keys, hygiene
from transforms.intervals import stage_entries, stage_intervals
from transforms.keys import is_in, positions
from transforms.movement import pipeline_movement
from transforms.opportunities import (
    StallRules,
    deal_history,
    opportunity_facts,
    skipped_required_stages,
    stage_limits,
)
from transforms.scopes import with_owner_scopes
from transforms.snapshot import deals_as_of, snapshot_of_day, tracked_changes

# the tables each of Night's generators makes, in order (the others are SQL files, see
# loudou.catalog)
# (day_opportunity and day_stage_limit are scratch tables, read by SQL-made marts)
FIRST_TABLES = ("fct_opportunity", "fct_pipeline_snapshot", "day_opportunity", "day_stage_limit")
CONVERSION_TABLES = ("mart_stage_conversion", "day_qualified_deal")
LATER_TABLES = (
    "mart_hygiene",
    "mart_territory_load",
    "mart_territory_balance",
    "mart_rebalancing",
    "mart_handover",
    "mart_forecast",
    "mart_forecast_accuracy",
    "mart_pipeline_movement",
)


@dataclass(frozen=True)
class BuildParams:
    as_of_date: pd.Timestamp
    day_start: pd.Timestamp  # the reporting day, as naive UTC
    day_end: pd.Timestamp
    timezone: str
    stall: StallRules = field(default_factory=StallRules)
    conversion: ConversionRules = field(default_factory=ConversionRules)
    territory: TerritoryRules = field(default_factory=TerritoryRules)
    quick_win_days: int = 7
    # the week to date and the one before: earlier weeks were built by their own days' runs
    movement_weeks: int = 2
    forecast: ForecastRules = field(default_factory=ForecastRules)

    @property
    def periods(self) -> dict[str, int]:
        c = self.conversion
        return {"week": c.weeks, "month": c.months, "quarter": c.quarters}


def live_state(state: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The canonical state without deleted deals and their history."""
    opportunities = state["opportunities"]
    deleted = opportunities.is_deleted.fillna(False).astype(bool)
    if not deleted.any():
        return state  # nothing to drop: no copies of the largest tables
    opportunities = opportunities[~deleted]
    live = opportunities.opportunity_id
    return state | {
        "opportunities": opportunities,
        "stage_history": state["stage_history"][is_in(state["stage_history"].opportunity_id, live)],
        "field_history": state["field_history"][is_in(state["field_history"].opportunity_id, live)],
    }


# what a deal's row in the as-of view takes from the deals as they were (with closed_at)
AS_OF_COLUMNS = ("stage", "status", "amount", "expected_close_date", "owner_id")


def as_of_view(
    opportunities: pd.DataFrame, then: pd.DataFrame, moment: pd.Timestamp
) -> pd.DataFrame:
    """The deals that existed at `moment`, with the stage, status, amount, close date and
    owner they had then, so a past day's marts are what that day's run would have built."""
    known = then.set_index("opportunity_id")
    view = opportunities[is_in(opportunities.opportunity_id, known.index)].copy()
    for column in AS_OF_COLUMNS:
        view[column] = known[column].reindex(view.opportunity_id).to_numpy()
    closed = view.status.isin(["won", "lost"]) & view.closed_at.lt(moment)
    view["closed_at"] = view.closed_at.where(closed)
    return view


def current_facts(
    opportunities: pd.DataFrame,
    view: pd.DataFrame,
    view_facts: pd.DataFrame,
    facts_of: Callable[[pd.DataFrame], pd.DataFrame],
) -> pd.DataFrame:
    """The facts of every deal as it is now (`facts_of(opportunities)`), from the as-of
    view's: opportunity_facts makes each deal's row from that deal alone, so a deal whose row
    now is its row in the view has its row already; only the deals changed since the day's end,
    or begun after it, are made again (a night's run: few or none). In the deals' order."""
    columns = [*AS_OF_COLUMNS, "closed_at"]
    now = opportunities[columns].reset_index(drop=True)
    then = view.set_index("opportunity_id")[columns].reindex(opportunities.opportunity_id)
    then = then.reset_index(drop=True)
    same = now.eq(then).fillna(False) | (now.isna() & then.isna())
    unchanged = same.all(axis=1).to_numpy()
    if unchanged.all():
        return view_facts  # the view is every deal, in their order
    kept = view_facts[is_in(view_facts.opportunity_id, opportunities.opportunity_id[unchanged])]
    facts = pd.concat([kept, facts_of(opportunities[~unchanged])], ignore_index=True)
    order = np.argsort(positions(facts.opportunity_id, opportunities.opportunity_id), kind="stable")
    return facts.take(order).reset_index(drop=True)


@dataclass(frozen=True)
class PreparedState:
    """The live canonical state with what every as-of day derives alike from it (stage entries
    and stays, field changes, skipped stages, account match keys), so a backfill prepares it
    once for all its days."""

    state: dict[str, pd.DataFrame]
    stages: pd.DataFrame
    entries: pd.DataFrame
    intervals: pd.DataFrame
    changes: FieldChanges
    skipped_stages: pd.Series
    account_keys: pd.DataFrame


def prepare(state: dict[str, pd.DataFrame], stages: pd.DataFrame) -> PreparedState:
    live = live_state(state)
    opportunities = live["opportunities"]
    entries = stage_entries(opportunities, live["stage_history"])
    intervals = stage_intervals(opportunities, entries, stages)
    changes = tracked_changes(live["field_history"], opportunities)
    return PreparedState(
        live,
        stages,
        entries,
        intervals,
        changes,
        skipped_required_stages(entries, stages),
        account_match_keys(live["accounts"]),
    )


class DealsAt:
    """The deals as they were at a moment (deals_as_of), each moment rebuilt once and the
    `keep` most recently used kept: days built one after another share their weeks' bounds.
    They share the pipeline movement of the weeks that have ended too (`finished_weeks`).
    The frames are shared, so nothing that reads them may change them."""

    def __init__(self, prepared: PreparedState, keep: int):
        self._prepared = prepared
        self._keep = keep
        self._states: OrderedDict[pd.Timestamp, pd.DataFrame] = OrderedDict()
        self.finished_weeks: dict[pd.Timestamp, pd.DataFrame] = {}

    def __call__(self, moment: pd.Timestamp) -> pd.DataFrame:
        if moment in self._states:
            self._states.move_to_end(moment)
            return self._states[moment]
        p = self._prepared
        deals = deals_as_of(p.state["opportunities"], p.entries, p.changes, p.stages, moment)
        self._states[moment] = deals
        if len(self._states) > self._keep:
            self._states.popitem(last=False)
        return deals

    @classmethod
    def for_days(cls, prepared: PreparedState, movement_weeks: int) -> DealsAt:
        """A day reads its end and its movement weeks' starts; one more is kept so that the
        next day's end, read first, pushes out the day before's end, not a week's start."""
        return cls(prepared, keep=movement_weeks + 2)


Tables = Iterator[tuple[str, pd.DataFrame]]


def facts_as_of(
    prepared: PreparedState,
    params: BuildParams,
    limits: pd.DataFrame,
    history: pd.DataFrame,
    deals: pd.DataFrame,
) -> pd.DataFrame:
    """fct_opportunity's rows of `deals`, their derived columns as of the day's end."""
    s = prepared.state
    return opportunity_facts(
        deals,
        prepared.entries,
        limits,
        s["field_history"],
        s["activities"],
        s["users"],
        s["accounts"],
        prepared.stages,
        as_of_date=params.as_of_date,
        as_of_end=params.day_end,
        timezone=params.timezone,
        rules=params.stall,
        history=history,
    )


@dataclass(frozen=True)
class Night:
    """What one as-of day's tables are made from: the deals as they were at the day's end
    (`then`), the as-of view of them and its facts, the stall limits and the day's snapshot.

    Its tables come in generators, each table yielded as soon as it is made, so that a caller
    can put it away before the next one is made (at scale 100 a night's tables are over a
    gigabyte): `first_tables` (the dimensions, the facts and the snapshot), then
    the two `lanes`, which only read the night, not each other, so a caller may drain them at
    once, each on a thread of its own. Nothing here may change the frames it shares."""

    prepared: PreparedState
    params: BuildParams
    deals_at: DealsAt
    then: pd.DataFrame
    view: pd.DataFrame
    limits: pd.DataFrame
    history: pd.DataFrame
    facts: pd.DataFrame
    snapshot: pd.DataFrame
    scoped_snapshot: pd.DataFrame

    @classmethod
    def of(
        cls, prepared: PreparedState, params: BuildParams, deals_at: DealsAt | None = None
    ) -> Night:
        """`deals_at` carries the deals of moments over from the days built before with it."""
        s, stages, moment = prepared.state, prepared.stages, params.day_end
        intervals = prepared.intervals
        if deals_at is None:
            deals_at = DealsAt.for_days(prepared, params.movement_weeks)
        then = deals_at(moment)
        view = as_of_view(s["opportunities"], then, moment)
        limits = stage_limits(
            stages, intervals[intervals.entered_at < moment], params.stall.default_limit_quantile
        )
        history = deal_history(
            prepared.entries,
            s["field_history"],
            s["activities"],
            stages,
            as_of_end=moment,
            skipped_stages=prepared.skipped_stages,
        )
        snapshot = snapshot_of_day(
            then, as_of_date=params.as_of_date, day_start=params.day_start, day_end=moment
        )
        return cls(
            prepared,
            params,
            deals_at,
            then,
            view,
            limits,
            history,
            facts=facts_as_of(prepared, params, limits, history, view),
            snapshot=snapshot,
            scoped_snapshot=with_owner_scopes(snapshot, s["users"]),
        )

    @property
    def has_deals(self) -> bool:
        """A CRM without deals (a new team's first day) has dimensions and empty marts."""
        return not self.prepared.state["opportunities"].empty

    def first_tables(self, current: bool = True) -> Tables:
        """The snapshot, the facts and stall limits of the as-of day (for the SQL-made marts)
        and, when `current`, the dimensions and the current facts. (fct_stage_interval
        follows the canonical state, not a day: see flows.tasks.state_writes.)"""
        s, prepared = self.prepared.state, self.prepared
        if current:
            yield from {
                "dim_territory": s["territories"],
                "dim_team": s["teams"],
                "dim_user": s["users"],
                "dim_account": s["accounts"],
                "dim_stage": prepared.stages,
            }.items()
        if not self.has_deals:
            yield from _no_rows(FIRST_TABLES[0 if current else 1 :])
            return
        if current:
            # the current state: every deal as it is now, its derived columns as of the day
            facts_of = partial(facts_as_of, prepared, self.params, self.limits, self.history)
            yield (
                "fct_opportunity",
                current_facts(s["opportunities"], self.view, self.facts, facts_of),
            )
        yield "fct_pipeline_snapshot", self.snapshot
        yield "day_opportunity", self.facts
        yield "day_stage_limit", self.limits

    def lanes(
        self, current: bool = True, past_forecasts: pd.DataFrame | None = None
    ) -> list[Tables]:
        """The tables after `first_tables`: `conversion_tables`, then `later_tables`."""
        if not self.has_deals:
            later = LATER_TABLES if current else LATER_TABLES[:-2] + LATER_TABLES[-1:]
            return [_no_rows(CONVERSION_TABLES), _no_rows(later)]
        return [self.conversion_tables(), self.later_tables(current, past_forecasts)]

    def conversion_tables(self) -> Tables:
        """Stage conversion from the cohorts, and the cohorts' qualified deals (a scratch table
        for the sales metrics)."""
        s, p, stages = self.prepared.state, self.params, self.prepared.stages
        cohorts = stage_cohorts(
            self.view, self.prepared.entries, self.prepared.intervals, stages, day_end=p.day_end
        )
        qualified_stages = stages[stages.is_qualified][["pipeline", "stage"]]
        qualified_ids = pd.Index(
            cohorts[cohorts.funnel.eq("any_stage")].merge(qualified_stages).opportunity_id.unique()
        )
        conversion = stage_conversion(
            cohorts,
            self.facts,
            s["accounts"],
            stages,
            as_of_date=p.as_of_date,
            timezone=p.timezone,
            rules=p.conversion,
        )
        del cohorts  # a row per deal and stage entered: the largest of the night's frames
        yield "mart_stage_conversion", conversion
        del conversion
        yield "day_qualified_deal", pd.DataFrame({"opportunity_id": qualified_ids})

    def later_tables(
        self, current: bool = True, past_forecasts: pd.DataFrame | None = None
    ) -> Tables:
        """Hygiene, territory load and balance, the forecast, pipeline movement
        and, when `current`, the accuracy of `past_forecasts` (mart_forecast rows kept by
        earlier runs)."""
        prepared, p = self.prepared, self.params
        s, stages = prepared.state, prepared.stages
        yield (
            "mart_hygiene",
            hygiene(
                self.view,
                prepared.entries,
                prepared.intervals,
                self.snapshot,
                s["accounts"],
                stages,
                as_of_date=p.as_of_date,
                day_end=p.day_end,
                timezone=p.timezone,
                quick_win_days=p.quick_win_days,
                account_keys=prepared.account_keys,
            ),
        )
        open_deals = self.scoped_snapshot[self.scoped_snapshot.status.eq("open")]
        load = territory_load(
            open_deals,
            s["accounts"],
            s["activities"],
            s["users"],
            s["teams"],
            s["targets"],
            as_of_date=p.as_of_date,
            day_end=p.day_end,
            rules=p.territory,
        )
        moves, balance = rebalancing(
            load,
            open_deals,
            s["opportunities"].set_index("opportunity_id").account_id,
            as_of_date=p.as_of_date,
            rules=p.territory,
        )
        yield "mart_territory_load", load
        yield "mart_territory_balance", balance
        yield "mart_rebalancing", moves
        yield "mart_handover", handover(open_deals, s["users"], load, as_of_date=p.as_of_date)
        made_forecast = forecast(
            self.then,
            prepared.entries,
            stages,
            s["users"],
            s["targets"],
            as_of_date=p.as_of_date,
            moment=p.day_end,
            timezone=p.timezone,
            rules=p.forecast,
        )
        yield "mart_forecast", made_forecast
        if current:
            yield (
                "mart_forecast_accuracy",
                forecast_accuracy(
                    made_forecast if past_forecasts is None else past_forecasts,
                    bookings(self.view, s["users"], p.timezone),
                    p.as_of_date,
                ),
            )
        del made_forecast
        yield (
            "mart_pipeline_movement",
            pipeline_movement(
                self.deals_at,
                s["users"],
                as_of_date=p.as_of_date,
                timezone=p.timezone,
                weeks=p.movement_weeks,
                finished_weeks=self.deals_at.finished_weeks,
            ),
        )


def _no_rows(names: tuple[str, ...]) -> Tables:
    """Tables without rows (the load gives them the warehouse's columns)."""
    for name in names:
        yield name, pd.DataFrame()


def iter_tables(
    prepared: PreparedState,
    params: BuildParams,
    *,
    current: bool = True,
    past_forecasts: pd.DataFrame | None = None,
    deals_at: DealsAt | None = None,
) -> Tables:
    """The as-of day's snapshot and marts and, when `current`, the dimensions, the facts and
    the accuracy of `past_forecasts`, one after another (see Night)."""
    night = Night.of(prepared, params, deals_at)
    yield from night.first_tables(current)
    for lane in night.lanes(current, past_forecasts):
        yield from lane


def backtest_forecasts(
    state: dict[str, pd.DataFrame],
    stages: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
    periods: int,
    timezone: str,
    rules: ForecastRules,
) -> pd.DataFrame:
    """The forecasts each method would have made for the last `periods` closed months, from
    the deals as they were then (rebuilt from history), scored against what was booked.
    One row per month × months ahead × scope × method (see transforms.forecast)."""
    s = live_state(state)
    opportunities = s["opportunities"]
    entries = stage_entries(opportunities, s["stage_history"])
    changes = tracked_changes(s["field_history"], opportunities)
    now = pd.Timestamp(as_of_date) + pd.Timedelta(days=1)
    deals_now = deals_as_of(opportunities, entries, changes, stages, now)
    actuals = bookings(deals_now, s["users"], timezone)
    cases = []
    for made, month, ahead in backtest_moments(as_of_date, periods):
        moment = utc_day_end(made, timezone)
        then = deals_as_of(opportunities, entries, changes, stages, moment)
        made_then = forecast(
            then,
            entries[entries.entered_at < moment],
            stages,
            s["users"],
            s["targets"],
            as_of_date=made,
            moment=moment,
            timezone=timezone,
            rules=rules,
        )
        rows = made_then[made_then.period_kind.eq("month") & made_then.period_start.eq(month)]
        cases.append(forecast_accuracy(rows, actuals, now).assign(months_ahead=ahead))
    out = pd.concat(cases, ignore_index=True)
    company = out.accuracy.where(out.scope_kind.eq("company"))
    return out.assign(company_accuracy=company)


def utc_day_end(day: pd.Timestamp, timezone: str) -> pd.Timestamp:
    """The end of a reporting day as naive UTC."""
    end = (pd.Timestamp(day) + pd.Timedelta(days=1)).tz_localize(timezone)
    return end.tz_convert("UTC").tz_localize(None)
