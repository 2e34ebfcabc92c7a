"""Every warehouse table of one run from the canonical state: the pure heart of a night."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from graphlib import TopologicalSorter
from typing import Any

import numpy as np
import pandas as pd

from loudou.catalog import CURRENT_STATE_TABLES
from transforms.forecast import FORECAST_COLUMNS, ForecastRules, forecast
from transforms.funnel import ConversionRules, stage_cohorts, stage_conversion
from transforms.health import TerritoryRules, handover, rebalancing
from transforms.history import FieldChanges
from transforms.hygiene import account_match_keys, hygiene
from transforms.intervals import stage_entries, stage_intervals
from transforms.keys import is_in, positions
from transforms.opportunities import (
    StallRules,
    deal_history,
    opportunity_facts,
    skipped_required_stages,
    stage_limits,
)
from transforms.snapshot import deals_as_of, tracked_changes

# the tables among STEPS (the others are products several tables share)
TABLE_PREFIXES = ("dim_", "fct_", "mart_", "day_")


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
    (`then`), the as-of view of them and its facts, and the stall limits.

    Its tables are made by `make_tables`, each from the night and the products it needs
    (STEPS). Nothing here may change the frames it shares."""

    prepared: PreparedState
    params: BuildParams
    then: pd.DataFrame
    view: pd.DataFrame
    limits: pd.DataFrame
    history: pd.DataFrame
    facts: pd.DataFrame

    @classmethod
    def of(
        cls,
        prepared: PreparedState,
        params: BuildParams,
    ) -> Night:
        s, stages, moment = prepared.state, prepared.stages, params.day_end
        intervals = prepared.intervals
        then = deals_as_of(s["opportunities"], prepared.entries, prepared.changes, stages, moment)
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
        return cls(
            prepared,
            params,
            then,
            view,
            limits,
            history,
            facts=facts_as_of(prepared, params, limits, history, view),
        )

    @property
    def has_deals(self) -> bool:
        """A CRM without deals (a new team's first day) gets empty pandas tables."""
        return not self.prepared.state["opportunities"].empty

    # what each table (or product several tables share) is made from: see STEPS

    def current_state_facts(self, made: Products) -> pd.DataFrame:
        """fct_opportunity: every deal as it is now, its derived columns as of the day."""
        facts_of = partial(facts_as_of, self.prepared, self.params, self.limits, self.history)
        opportunities = self.prepared.state["opportunities"]
        return current_facts(opportunities, self.view, self.facts, facts_of)

    def cohorts(self, made: Products) -> pd.DataFrame:
        """A row per deal and stage entered: the largest of the night's frames."""
        p = self.prepared
        return stage_cohorts(
            self.view, p.entries, p.intervals, p.stages, day_end=self.params.day_end
        )

    def stage_conversion(self, made: Products) -> pd.DataFrame:
        p = self.params
        return stage_conversion(
            made["cohorts"],
            self.facts,
            self.prepared.state["accounts"],
            self.prepared.stages,
            as_of_date=p.as_of_date,
            timezone=p.timezone,
            rules=p.conversion,
        )

    def qualified_deals(self, made: Products) -> pd.DataFrame:
        """The deals that reached a qualified stage (any-stage), for the sales metrics."""
        cohorts, stages = made["cohorts"], self.prepared.stages
        qualified_stages = stages[stages.is_qualified][["pipeline", "stage"]]
        reached = cohorts[cohorts.funnel.eq("any_stage")].merge(qualified_stages)
        return pd.DataFrame({"opportunity_id": reached.opportunity_id.unique()})

    def hygiene(self, made: Products) -> pd.DataFrame:
        prepared, p = self.prepared, self.params
        return hygiene(
            self.view,
            prepared.entries,
            prepared.intervals,
            prepared.state["accounts"],
            prepared.stages,
            as_of_date=p.as_of_date,
            day_end=p.day_end,
            timezone=p.timezone,
            quick_win_days=p.quick_win_days,
            account_keys=prepared.account_keys,
        )

    def forecast(self, made: Products) -> pd.DataFrame:
        prepared, p = self.prepared, self.params
        return forecast(
            self.then,
            prepared.entries,
            prepared.stages,
            prepared.state["users"],
            prepared.state["targets"],
            as_of_date=p.as_of_date,
            moment=p.day_end,
            timezone=p.timezone,
            rules=p.forecast,
        )


# the products (and tables) made so far that a step may read, by name
Products = Mapping[str, Any]


@dataclass(frozen=True)
class Step:
    """How a night makes one of its tables, or a product several tables share, from the
    night and the products it `needs`."""

    make: Callable[[Night, Products], Any]
    needs: tuple[str, ...] = ()


def _attribute(name: str) -> Step:
    return Step(lambda night, made: getattr(night, name))


# every table a night makes in pandas (and the products they share); the order made follows
# from `needs` alone (make_tables): this listing only breaks ties
STEPS: dict[str, Step] = {
    "fct_opportunity": Step(Night.current_state_facts),
    "day_opportunity": _attribute("facts"),
    "day_stage_limit": _attribute("limits"),
    "cohorts": Step(Night.cohorts),
    "mart_stage_conversion": Step(Night.stage_conversion, ("cohorts",)),
    "day_qualified_deal": Step(Night.qualified_deals, ("cohorts",)),
    "mart_hygiene": Step(Night.hygiene),
    "mart_forecast": Step(Night.forecast),
}


def _needed(names: set[str]) -> list[str]:
    """`names` and every product they need, in STEPS' order."""
    needed, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(STEPS[name].needs)
    return [name for name in STEPS if name in needed]


def make_tables(night: Night, names: list[str] | tuple[str, ...], threads: int = 1) -> Tables:
    """Each of `names` as soon as it is made, after the products it needs, so that a caller
    can put it away before the next (at scale 100 a night's tables are over a gigabyte); a
    product is let go once the last table that needs it is made. On one thread, a step that
    reads a product made already comes first, so the largest product (the cohorts) lives
    shortest; on more, every step whose needs are made runs at once (numpy, pandas' group-bys
    and Arrow let go of the GIL for most of their work). Nothing may change what it reads."""
    wanted = set(names)
    if not night.has_deals:  # a CRM without deals (a new team's first day): empty tables
        for name in names:
            yield name, pd.DataFrame()
        return
    steps = _needed(wanted)
    graph = TopologicalSorter({name: STEPS[name].needs for name in steps})
    graph.prepare()
    readers = Counter(need for name in steps for need in STEPS[name].needs)
    made: dict[str, Any] = {}

    def finished(name: str, value: Any) -> None:
        graph.done(name)
        for need in STEPS[name].needs:
            readers[need] -= 1
            if not readers[need]:
                del made[need]
        if readers[name]:
            made[name] = value

    if threads == 1:
        ready: list[str] = []
        while graph.is_active():
            ready.extend(graph.get_ready())
            name = min(ready, key=lambda n: (not made.keys() & set(STEPS[n].needs), steps.index(n)))
            ready.remove(name)
            value = STEPS[name].make(night, made)
            finished(name, value)
            if name in wanted:
                yield name, value
            del value
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="loudou-table") as pool:
        running: dict[Future, str] = {}
        while graph.is_active():
            for name in graph.get_ready():
                running[pool.submit(STEPS[name].make, night, made)] = name
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: steps.index(running[f])):
                name = running.pop(future)
                value = future.result()
                finished(name, value)
                if name in wanted:
                    yield name, value


def iter_tables(
    prepared: PreparedState,
    params: BuildParams,
    *,
    current: bool = True,
    threads: int = 1,
) -> Tables:
    """The as-of day's tables made in pandas and, when `current`, the current-state facts
    (see Night and make_tables). The night itself is made at once, so that each table's time
    is its own."""
    night = Night.of(prepared, params)
    names = [n for n in STEPS if n.startswith(TABLE_PREFIXES)]
    if not current:
        names = [n for n in names if n not in CURRENT_STATE_TABLES]
    return make_tables(night, names, threads)


# the tables a load makes in Python from rows the warehouse holds (loudou.catalog.load_tables),
# keyed by the function the catalog names; each gets its inputs' rows by table name
WarehouseRows = Mapping[str, pd.DataFrame]


def _open_deals(snapshot: pd.DataFrame) -> pd.DataFrame:
    """The day's open deals in one order, whichever warehouse they come from: the hand-over
    and the rebalancing break ties by the order of what they read."""
    return snapshot[snapshot.status.eq("open")].sort_values("opportunity_id", ignore_index=True)


def _by_owner(load: pd.DataFrame) -> pd.DataFrame:
    return load.sort_values("owner_id", ignore_index=True)


def rebalanced(rows: WarehouseRows, params: BuildParams) -> dict[str, pd.DataFrame]:
    deal_accounts = rows["stg_opportunities"].set_index("opportunity_id").account_id
    moves, balance = rebalancing(
        _by_owner(rows["mart_territory_load"]),
        _open_deals(rows["fct_pipeline_snapshot"]),
        deal_accounts,
        as_of_date=params.as_of_date,
        rules=params.territory,
    )
    return {"mart_rebalancing": moves, "mart_territory_balance": balance}


def handed_over(rows: WarehouseRows, params: BuildParams) -> dict[str, pd.DataFrame]:
    made = handover(
        _open_deals(rows["fct_pipeline_snapshot"]),
        rows["stg_users"],
        _by_owner(rows["mart_territory_load"]),
        as_of_date=params.as_of_date,
    )
    return {"mart_handover": made}


MADE_IN_LOAD: dict[str, Callable[[WarehouseRows, BuildParams], dict[str, pd.DataFrame]]] = {
    "transforms.health.rebalancing": rebalanced,
    "transforms.health.handover": handed_over,
}


def replayed_forecasts(
    prepared: PreparedState,
    replays: Iterable[tuple[pd.Timestamp, pd.Timestamp]],
    *,
    timezone: str,
    rules: ForecastRules,
) -> pd.DataFrame:
    """mart_forecast's rows for each (made, month) of `replays`: what each method would have
    forecast for that month on the day `made`, from the deals as they were at its end (rebuilt
    from history). One forecast per day made covers every month asked of it. The warehouse
    scores them as it scores the kept forecasts (mart_forecast_accuracy)."""
    s, entries, stages = prepared.state, prepared.entries, prepared.stages
    months: dict[pd.Timestamp, list[pd.Timestamp]] = {}
    for made, month in replays:
        months.setdefault(made, []).append(month)
    replayed = []
    for made, wanted in sorted(months.items()):
        moment = utc_day_end(made, timezone)
        then = deals_as_of(s["opportunities"], entries, prepared.changes, stages, moment)
        if then.empty:  # no deal yet: nothing to forecast from (as on a night without deals)
            continue
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
        replayed.append(
            made_then[made_then.period_kind.eq("month") & made_then.period_start.isin(wanted)]
        )
    if not replayed:
        return pd.DataFrame(columns=FORECAST_COLUMNS)
    return pd.concat(replayed, ignore_index=True)


def utc_day_end(day: pd.Timestamp, timezone: str) -> pd.Timestamp:
    """The end of a reporting day as naive UTC."""
    end = (pd.Timestamp(day) + pd.Timedelta(days=1)).tz_localize(timezone)
    return end.tz_convert("UTC").tz_localize(None)
