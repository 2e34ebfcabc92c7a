"""The I/O tasks every flow shares: read the source and the warehouse, build, load, record."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from loudou.canonical import TABLES, coerce
from loudou.catalog import (
    BY_NAME,
    CURRENT_STATE_TABLES,
    SCRATCH_TABLES,
    STATE,
    TableSpec,
    load_tables,
    render,
    select_input,
    sql_tables,
)
from loudou.config import Settings, Thresholds, redact_url
from loudou.errors import LoudouError
from loudou.memory import release_freed_memory
from loudou.quality import DataQualityError, QualityRules, Verdict, gate
from loudou.source import (
    SourceSpec,
    check_connection,
    read_opportunity_keys,
    read_raw,
    unrecorded_fields,
)
from loudou.warehouse import (
    Build,
    DuckDBWarehouse,
    PythonBuild,
    Spooled,
    SqlBuild,
    Write,
    check_contract,
    open_warehouse,
    staging_table,
    utc_now,
)
from transforms.build import (
    MADE_IN_LOAD,
    BuildParams,
    PreparedState,
    iter_tables,
    prepare,
    replayed_forecasts,
)
from transforms.forecast import ForecastRules, backtest_cases, backtest_moments
from transforms.funnel import ConversionRules
from transforms.health import TerritoryRules
from transforms.keys import is_in
from transforms.opportunities import StallRules
from transforms.quality import OPPORTUNITY_CHILDREN, stages_no_longer_configured
from transforms.stages import stage_dimension
from transforms.state import drop_missing_parents, replace_children, upsert


@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs, read once from loudou.yaml at the edge."""

    source: SourceSpec
    warehouse_url: str
    timezone: str
    overlap: timedelta
    rules: StallRules
    conversion: ConversionRules
    territory: TerritoryRules
    quick_win_days: int
    public_pool_days: int
    movement_weeks: int
    forecast: ForecastRules
    quality: QualityRules
    # a nightly's lanes of marts made at once (see spool_warehouse_tables)
    threads: int
    stages: pd.DataFrame = field(compare=False, hash=False)

    @property
    def warehouse_label(self) -> str:
        return redact_url(self.warehouse_url)

    @classmethod
    def from_settings(cls, settings: Settings) -> RunPlan:
        return cls(
            source=SourceSpec.from_settings(settings),
            warehouse_url=settings.warehouse.url,
            timezone=settings.timezone,
            overlap=timedelta(minutes=settings.extract.overlap_minutes),
            rules=StallRules(
                no_activity_days=settings.thresholds.no_activity_days,
                close_date_pushes=settings.thresholds.close_date_pushes,
                close_date_changes_recorded="expected_close_date"
                not in unrecorded_fields(settings.source.kind),
            ),
            conversion=ConversionRules(
                weeks=settings.analysis.weeks,
                months=settings.analysis.months,
                quarters=settings.analysis.quarters,
                alpha=settings.analysis.bottleneck_alpha,
                weekly_drop=settings.analysis.weekly_drop,
            ),
            territory=TerritoryRules(
                tolerance=settings.territory.tolerance,
                target_cv=settings.territory.target_cv,
                protected_probability=settings.territory.protected_probability,
            ),
            quick_win_days=settings.thresholds.quick_win_days,
            public_pool_days=settings.thresholds.public_pool_days,
            movement_weeks=settings.analysis.movement_weeks,
            forecast=ForecastRules(**settings.forecast.model_dump()),
            quality=QualityRules.from_settings(settings),
            threads=settings.runner.nightly_threads,
            stages=stage_dimension(settings.pipelines),
        )


@dataclass
class Extract:
    """What the source gave this run: changed rows per table and, if incremental, live keys.
    Frames are as read (untyped) until the data-quality gate has passed them."""

    frames: dict[str, pd.DataFrame]
    full: bool
    live_opportunity_ids: pd.Series | None = None


def day_bounds(as_of: date, timezone: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The reporting day's start and end as naive UTC timestamps."""
    start = pd.Timestamp(as_of).tz_localize(timezone)
    end = (pd.Timestamp(as_of) + pd.Timedelta(days=1)).tz_localize(timezone)
    return (start.tz_convert("UTC").tz_localize(None), end.tz_convert("UTC").tz_localize(None))


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a dropped connection; never bad credentials, a missing table or bad config."""
    error = state.data if isinstance(state.data, BaseException) else None
    if isinstance(error, LoudouError):
        return getattr(error, "transient", False)
    # a driver error outside our wrappers (a load on PostgreSQL): only a lost connection heals
    return isinstance(error, (ConnectionError, TimeoutError, psycopg.OperationalError))


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def read_watermarks(warehouse_url: str, source_label: str) -> dict[str, datetime]:
    warehouse = open_warehouse(warehouse_url)
    warehouse.ensure_schema()
    rows = warehouse.query(
        "SELECT table_name, watermark FROM etl_watermark WHERE source = :source",
        {"source": source_label},
    )
    return {r.table_name: pd.Timestamp(r.watermark).to_pydatetime() for r in rows.itertuples()}


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def extract(
    source: SourceSpec, since: datetime | None, retry: dict[str, list[str]] | None = None
) -> Extract:
    """All canonical tables, or only rows changed after `since` (UTC) when given, plus the
    rows quarantined last time (`retry`: keys per table)."""
    check_connection(source)
    retry = retry or {}
    frames = {name: read_raw(source, name, since, retry.get(name, ())) for name in TABLES}
    live = None if since is None else read_opportunity_keys(source)
    return Extract(frames=frames, full=since is None, live_opportunity_ids=live)


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def read_state(warehouse_url: str) -> dict[str, pd.DataFrame]:
    warehouse = open_warehouse(warehouse_url)
    with warehouse.session():  # one connection for the ten tables
        return {
            name: coerce(table, warehouse.read_state_table(staging_table(name)), "UTC")
            for name, table in TABLES.items()
        }


@dataclass(frozen=True)
class QualityState:
    """What the gate needs from the warehouse: table sizes and the rows waiting in quarantine."""

    row_counts: dict[str, int]
    waiting: pd.DataFrame = field(compare=False, hash=False)

    def retry_keys(self) -> dict[str, list[str]]:
        """Keys to read again per table; a deal's history is read again with the deal."""
        keys = self.waiting.groupby("table_name").retry_key.agg(lambda k: sorted(set(k)))
        retry = keys.to_dict()
        deals = sorted(
            {k for t in ("opportunities", *OPPORTUNITY_CHILDREN) for k in retry.get(t, [])}
        )
        for name in ("opportunities", *OPPORTUNITY_CHILDREN):
            if deals:
                retry[name] = deals
        return retry


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def read_quality_state(warehouse_url: str) -> QualityState:
    warehouse = open_warehouse(warehouse_url)
    with warehouse.session():
        counts = warehouse.query(
            " UNION ALL ".join(
                f"SELECT '{name}' AS table_name, COUNT(*) AS n FROM {staging_table(name)}"
                for name in TABLES
            )
        )
        waiting = warehouse.query("SELECT * FROM dq_quarantine WHERE released_at IS NULL")
    return QualityState(dict(zip(counts.table_name, counts.n.astype(int))), waiting)


@task(cache_policy=NO_CACHE)
def check_quality(
    extracted: Extract,
    state: dict[str, pd.DataFrame],
    plan: RunPlan,
    known: QualityState,
    now: datetime,
) -> Verdict:
    """The data-quality gate on this run's extract (Great Expectations, loudou/quality.py)."""
    verdict = gate(
        extracted.frames,
        live_opportunity_ids=extracted.live_opportunity_ids,
        warehouse_state=state,
        previous_counts=known.row_counts,
        read_in_full={n for n, t in TABLES.items() if extracted.full or t.incremental == "full"},
        rules=plan.quality,
        source_timezone=plan.source.timezone,
        now=now,
    )
    release_freed_memory()  # what GX left behind, before the transform needs the room
    return verdict


def quality_writes(
    verdict: Verdict, known: QualityState, extracted: Extract, run_id: str, now: datetime
) -> list[Write]:
    """This run's dq_result rows; quarantine the rows that failed, release those that pass.

    A waiting row is released when the run read it again and it did not fail again (or its
    deal is gone from the source); `dq_quarantine` keeps one row per table and key."""
    failed = verdict.quarantine.assign(run_id=run_id, quarantined_at=now, released_at=pd.NaT)
    waiting = known.waiting
    if extracted.full:
        reread = pd.Series(True, index=waiting.index)
    else:
        frames = extracted.frames
        read_keys = {
            name: frames[name][TABLES[name].key[0]].astype("str")
            for name in TABLES
            if len(TABLES[name].key) == 1
        }
        deal_ids = read_keys["opportunities"]
        for child in OPPORTUNITY_CHILDREN:
            read_keys[child] = deal_ids
        reread = pd.Series(False, index=waiting.index)
        for name, keys in read_keys.items():
            reread |= waiting.table_name.eq(name) & waiting.retry_key.isin(keys)
        deal_rows = waiting.table_name.isin(["opportunities", *OPPORTUNITY_CHILDREN])
        reread |= deal_rows & ~waiting.retry_key.isin(extracted.live_opportunity_ids)
    again = waiting.set_index(["table_name", "record_key"]).index.isin(
        failed.set_index(["table_name", "record_key"]).index
    )
    released = waiting[reread.to_numpy() & ~again].assign(released_at=now)
    return [
        Write("dq_result", verdict.results.assign(run_id=run_id, checked_at=now)),
        Write(
            "dq_quarantine",
            pd.concat([failed, released], ignore_index=True),
            replace="keys",
            keys=("table_name", "record_key"),
        ),
    ]


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def read_held_rows(
    warehouse_url: str, quarantine: pd.DataFrame, passed_frames: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    """The warehouse's last good version of the rows a full refresh holds back: the deals in
    quarantine with their history, rows of other tables by key, and, when a source row lost
    its opportunity_id, every deal the source no longer names (one of them is that row)."""
    deal_tables = ("opportunities", *OPPORTUNITY_CHILDREN)
    held = quarantine[quarantine.retry_key.notna()]
    deals = set(held.retry_key[held.table_name.isin(deal_tables)])
    keyless = quarantine.table_name.eq("opportunities") & quarantine.retry_key.isna()
    by_key = {
        name: set(held.retry_key[held.table_name.eq(name)])
        for name, table in TABLES.items()
        if name not in deal_tables and len(table.key) == 1
    }
    if not deals and not keyless.any() and not any(by_key.values()):
        return {}
    warehouse = open_warehouse(warehouse_url)
    rows: dict[str, pd.DataFrame] = {}
    if keyless.any():
        known = warehouse.query(f"SELECT opportunity_id FROM {staging_table('opportunities')}")
        source_ids = passed_frames["opportunities"].opportunity_id
        deals |= set(known.opportunity_id[~is_in(known.opportunity_id, source_ids)])
    for name, keys in {**dict.fromkeys(deal_tables, deals), **by_key}.items():
        if keys:
            column = "opportunity_id" if name in deal_tables else TABLES[name].key[0]
            table = coerce(TABLES[name], warehouse.read_state_table(staging_table(name)), "UTC")
            rows[name] = table[table[column].isin(keys)]
    return rows


def with_last_good_versions(
    frames: dict[str, pd.DataFrame], held: dict[str, pd.DataFrame]
) -> dict[str, pd.DataFrame]:
    return {
        name: pd.concat([frame, held[name]], ignore_index=True) if name in held else frame
        for name, frame in frames.items()
    }


def passed(extracted: Extract, verdict: Verdict) -> Extract:
    """The extract as the gate passed it: typed, without the rows held back."""
    return Extract(verdict.frames, extracted.full, extracted.live_opportunity_ids)


def merge_state(
    state: dict[str, pd.DataFrame], extract: Extract
) -> tuple[dict[str, pd.DataFrame], list[Write]]:
    """The canonical state after this run and the staging writes that record it."""
    if extract.full:
        return extract.frames, [
            Write(staging_table(n), f, replace="all") for n, f in extract.frames.items()
        ]
    changed_ids = extract.frames["opportunities"].opportunity_id
    live = extract.live_opportunity_ids
    known = state["opportunities"].opportunity_id
    removed_ids = known[~is_in(known, live)]
    touched = pd.concat([changed_ids, removed_ids]).drop_duplicates()
    merged, writes = {}, []
    for name, table in TABLES.items():
        rows = extract.frames[name]
        if table.incremental == "full":
            merged[name] = rows
            writes.append(Write(staging_table(name), rows, replace="all"))
        elif table.incremental == "opportunity":
            merged[name] = drop_missing_parents(replace_children(state[name], rows, touched), live)
            writes.append(
                Write(
                    staging_table(name),
                    rows,
                    replace="keys",
                    keys=("opportunity_id",),
                    key_rows=touched.to_frame("opportunity_id"),
                )
            )
        else:
            merged[name] = upsert(state[name], rows, list(table.key))
            key_rows = None
            if name == "opportunities":
                merged[name] = merged[name][is_in(merged[name].opportunity_id, live)]
                key_rows = touched.to_frame("opportunity_id")
            elif name == "activities":
                gone = merged[name].opportunity_id.notna() & ~is_in(
                    merged[name].opportunity_id, live
                )
                key_rows = pd.concat(
                    [rows[["activity_id"]], merged[name].loc[gone, ["activity_id"]]]
                )
                merged[name] = merged[name][~gone]
            writes.append(
                Write(staging_table(name), rows, replace="keys", keys=table.key, key_rows=key_rows)
            )
    return merged, writes


class AsOfError(LoudouError):
    pass


class StageConfigError(LoudouError):
    pass


def check_as_of(as_of: date, timezone: str) -> None:
    """A day to report on must have begun: the future has no data yet."""
    today = pd.Timestamp.now(tz=timezone).date()
    if as_of > today:
        raise AsOfError(f"--as-of {as_of} is in the future (today is {today} in {timezone})")


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def newest_current_day(warehouse_url: str) -> date | None:
    """The as-of day of the current-state tables: the newest that a successful nightly built."""
    warehouse = open_warehouse(warehouse_url)
    warehouse.ensure_schema()
    newest = warehouse.query(
        "SELECT MAX(as_of_date) AS day FROM etl_run "
        "WHERE flow = 'nightly' AND status = 'success' AND as_of_date IS NOT NULL"
    ).day.iat[0]
    return None if pd.isna(newest) else pd.Timestamp(newest).date()


@task(cache_policy=NO_CACHE)
def prepare_state(state: dict[str, pd.DataFrame], plan: RunPlan) -> PreparedState:
    """The live state with its stage entries and stays, shared by every day built from it."""
    return prepare(state, plan.stages)


def build_params(plan: RunPlan, as_of: date) -> BuildParams:
    day_start, day_end = day_bounds(as_of, plan.timezone)
    return BuildParams(
        as_of_date=pd.Timestamp(as_of),
        day_start=day_start,
        day_end=day_end,
        timezone=plan.timezone,
        stall=plan.rules,
        conversion=plan.conversion,
        territory=plan.territory,
        quick_win_days=plan.quick_win_days,
        forecast=plan.forecast,
    )


def timed(tables: Iterator[tuple[str, Any]]) -> Iterator[tuple[str, Any, float]]:
    """Each table with the seconds it took: from the one before it being handed on."""
    started = time.perf_counter()
    for name, table in tables:
        yield name, table, time.perf_counter() - started
        started = time.perf_counter()


@dataclass(frozen=True)
class DayBuild:
    """A day's tables made in pandas, and the seconds each took."""

    tables: dict[str, pd.DataFrame]
    seconds: dict[str, float]

    def made(self) -> dict[str, Made]:
        return made_in_python(self.tables, self.seconds)


@task(cache_policy=NO_CACHE)
def build_warehouse_tables(
    prepared: PreparedState,
    plan: RunPlan,
    as_of: date,
    current: bool = True,
) -> DayBuild:
    """The tables made in pandas from the canonical state (pure transforms); the current-state
    facts only when `current`."""
    tables = iter_tables(
        prepared,
        build_params(plan, as_of),
        current=current,
    )
    build = DayBuild({}, {})
    for name, frame, seconds in timed(tables):
        build.tables[name], build.seconds[name] = frame, seconds
    return build


@task(cache_policy=NO_CACHE)
def spool_warehouse_tables(
    prepared: PreparedState,
    plan: RunPlan,
    as_of: date,
    folder: Path,
    current: bool = True,
) -> dict[str, Spooled]:
    """Every table of the night made in pandas, each written to a Parquet file in `folder`
    as soon as it is made and let go, so that the night holds few of them in memory at once;
    on `plan.threads` threads (see transforms.build.make_tables)."""
    tables = iter_tables(
        prepared,
        build_params(plan, as_of),
        current=current,
        threads=plan.threads,
    )
    return {
        name: Spooled.write(frame, folder / f"{name}.parquet", seconds=seconds)
        for name, frame, seconds in timed(tables)
    }


@dataclass(frozen=True)
class SqlContext:
    """What the SQL tables' Jinja reads from loudou.yaml."""

    stages: pd.DataFrame
    timezone: str = "UTC"
    conversion: ConversionRules = field(default_factory=ConversionRules)
    public_pool_days: int = Thresholds().public_pool_days
    territory: TerritoryRules = field(default_factory=TerritoryRules)
    movement_weeks: int = 2

    @classmethod
    def of(cls, plan: RunPlan) -> SqlContext:
        return cls(
            plan.stages,
            plan.timezone,
            plan.conversion,
            plan.public_pool_days,
            plan.territory,
            plan.movement_weeks,
        )


def run_day_params(days: Sequence[date], timezone: str) -> dict[str, Any]:
    """The run days as sql/facts/_days.sql binds them (:as_of_date_0, :day_start_0, ...), and
    the first as :as_of_date, :day_start and :day_end, which tables made a day at a time read."""
    params: dict[str, Any] = {}
    for i, day in enumerate(days):
        day_start, day_end = day_bounds(day, timezone)
        params |= {f"as_of_date_{i}": day, f"day_start_{i}": day_start, f"day_end_{i}": day_end}
    return params | {name: params[f"{name}_0"] for name in ("as_of_date", "day_start", "day_end")}


def sql_build(spec: TableSpec, days: Sequence[date], context: SqlContext) -> SqlBuild:
    """How the warehouse makes `spec`'s rows of `days` (one, unless the table is made in one
    pass): its SQL file rendered with the configured stages, time zone, periods and
    thresholds, replacing those days' slices (or, for a current-state table, all its rows)."""
    if len(days) != 1 and not spec.one_pass:
        raise ValueError(f"{spec.name} is made one day at a time, not for {len(days)} days")
    stages, conversion = context.stages, context.conversion
    select = render(
        spec,
        stages=stages.to_dict("records"),
        timezone=context.timezone,
        periods={
            "week": conversion.weeks,
            "month": conversion.months,
            "quarter": conversion.quarters,
        },
        public_pool_days=context.public_pool_days,
        territory=context.territory,
        weeks=context.movement_weeks,
        days=len(days),
    )
    params = run_day_params(days, context.timezone)
    if not spec.sliced:
        return SqlBuild(spec.name, select, params, "all")
    listed = ", ".join(f":as_of_date_{i}" for i in range(len(days)))
    return SqlBuild(spec.name, select, params, "where", f"as_of_date IN ({listed})")


def python_build(specs: list[TableSpec], params: BuildParams) -> PythonBuild:
    """How the load makes the tables of one Python function from what the warehouse holds:
    the as-of day's slices of what they read, and the whole of the rest."""
    reads = dict.fromkeys(read for spec in specs for read in spec.reads)
    make = MADE_IN_LOAD[specs[0].made_by]
    return PythonBuild(
        tuple(spec.name for spec in specs),
        {read: select_input(read) for read in reads},
        partial(make, params=params),
        {"as_of_date": params.as_of_date.date()},
    )


def load_builds(
    plan: RunPlan, as_of: date, current: bool = True, made_before: Collection[str] = ()
) -> list[Build]:
    """The run's tables made inside the warehouse, in the load's transaction, in build order:
    the as-of day's slices (but those `made_before`, by a backfill's pass) and, when `current`,
    the current-state tables; by SQL files, or by the Python function that makes them from
    tables made there (one build for all its tables)."""
    context, params = SqlContext.of(plan), build_params(plan, as_of)
    specs = [
        spec for spec in load_tables() if (spec.sliced or current) and spec.name not in made_before
    ]
    by_function: dict[str, list[TableSpec]] = {}
    for spec in specs:
        if not spec.in_sql:
            by_function.setdefault(spec.made_by, []).append(spec)
    builds: list[Build] = []
    for spec in specs:
        if spec.in_sql:
            builds.append(sql_build(spec, [as_of], context))
        elif spec is by_function[spec.made_by][0]:
            builds.append(python_build(by_function[spec.made_by], params))
    return builds


def one_pass_builds(plan: RunPlan, days: Sequence[date]) -> list[SqlBuild]:
    """The tables a backfill makes for `days` in one pass, in build order."""
    context = SqlContext.of(plan)
    return [sql_build(spec, days, context) for spec in sql_tables() if spec.one_pass]


def built_in_memory(
    table: str,
    inputs: Mapping[str, pd.DataFrame],
    as_of: date,
    context: SqlContext,
) -> pd.DataFrame:
    """`table` as its SQL file makes it from `inputs` (warehouse tables by name), in a DuckDB
    in memory, after the SQL tables it reads that `inputs` does not give: what a run would
    build from those rows, for rows no warehouse keeps (forecasts replayed from history,
    hand-made tests)."""
    needed, todo = set(), [table]
    while todo:
        name = todo.pop()
        if name not in needed and name not in inputs and name in BY_NAME:
            needed.add(name)
            todo.extend(BY_NAME[name].reads)
    warehouse = DuckDBWarehouse("duckdb:///:memory:")
    with warehouse.session():
        warehouse.ensure_schema()
        with warehouse.transaction() as transaction:
            for name, rows in inputs.items():
                transaction.write(
                    Write(name, rows, "scratch" if name in SCRATCH_TABLES else "none")
                )
            for spec in sql_tables():
                if spec.name in needed:
                    transaction.build(sql_build(spec, [as_of], context))
        return warehouse.read_table(table)


def backtest(
    state: dict[str, pd.DataFrame], plan: RunPlan, as_of: date, periods: int
) -> pd.DataFrame:
    """The forecasts of the last `periods` closed months replayed from history
    (transforms.build.replayed_forecasts), scored the way the warehouse scores the kept ones:
    by mart_forecast_accuracy's SQL, on a copy of the state it reads."""
    replayed = replayed_forecasts(
        prepare(state, plan.stages),
        backtest_moments(pd.Timestamp(as_of), periods),
        timezone=plan.timezone,
        rules=plan.forecast,
    )
    reads = BY_NAME["mart_forecast_accuracy"].reads
    inputs = {read: state[read.removeprefix("stg_")] for read in reads if read in STATE}
    inputs["mart_forecast_backtest"] = replayed
    scored = built_in_memory("mart_forecast_accuracy", inputs, as_of, SqlContext.of(plan))
    return backtest_cases(scored)


@task(cache_policy=NO_CACHE)
def replay_closed_months(prepared: PreparedState, plan: RunPlan, as_of: date) -> Write:
    """The forecasts of the last `forecast.backtest_months` closed months that the warehouse
    has not replayed yet (mart_forecast_backtest keeps them): on a new installation, each
    method's accuracy from the first night; afterwards, a month's three replays when it
    closes."""
    kept = open_warehouse(plan.warehouse_url).query(
        "SELECT DISTINCT as_of_date, period_start FROM mart_forecast_backtest "
        "WHERE period_kind = 'month'"
    )
    done = set(zip(pd.to_datetime(kept.as_of_date), pd.to_datetime(kept.period_start), strict=True))
    wanted = backtest_moments(pd.Timestamp(as_of), plan.forecast.backtest_months)
    replayed = replayed_forecasts(
        prepared,
        [replay for replay in wanted if replay not in done],
        timezone=plan.timezone,
        rules=plan.forecast,
    )
    keys = ("as_of_date", "period_kind", "period_start")
    return Write("mart_forecast_backtest", replayed, replace="keys", keys=keys)


@dataclass(frozen=True)
class Made:
    """A table of a run: its rows and the seconds it took to make (etl_table_build)."""

    rows: int
    seconds: float


Closing = Callable[[dict[str, Made]], list[Write]]


@task(
    retries=5,
    retry_delay_seconds=[2, 5, 10, 20, 40],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def load(
    warehouse_url: str,
    writes: list[Write],
    builds: list[Build] | None = None,
    closing: Closing | None = None,
) -> dict[str, Made]:
    """In one transaction: the writes, then the SQL tables built from them in the warehouse,
    then `closing`'s writes (the run's record), made from what the builds made. Returns the
    builds' rows and seconds."""
    # one writer at a time: the warehouse's own lock (DuckDB's file lock, a PostgreSQL
    # advisory lock), released by the database even when a run is killed
    made: dict[str, Made] = {}
    with open_warehouse(warehouse_url).transaction() as transaction:
        for write in writes:
            transaction.write(write)
        for build in builds or []:
            started = time.perf_counter()
            rows = transaction.build(build)
            seconds = round(time.perf_counter() - started, 3)
            # a build of several tables counts its time once, with its first
            for n, (table, count) in enumerate(rows.items()):
                made[table] = Made(count, seconds if n == 0 else 0.0)
        for write in closing(made) if closing else []:
            transaction.write(write)
    return made


SPOOL_PREFIX = "loudou-nightly-"
# the watermark of a table that has never had a row
EPOCH = datetime(1970, 1, 2)


@contextmanager
def spool_folder() -> Iterator[Path]:
    """A temporary folder for a night's tables until the load (`spool_warehouse_tables`),
    removed when the run ends. A run killed outright cannot remove its own: the folders of
    runs whose process is gone are removed first."""
    for stale in Path(tempfile.gettempdir()).glob(f"{SPOOL_PREFIX}*-*"):
        pid = stale.name.removeprefix(SPOOL_PREFIX).split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{SPOOL_PREFIX}{os.getpid()}-") as folder:
        yield Path(folder)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def read_slices(
    warehouse_url: str, tables: tuple[str, ...], as_of: date
) -> dict[str, pd.DataFrame]:
    """The as-of day's slice of each of `tables`, as loaded."""
    warehouse = open_warehouse(warehouse_url)
    with warehouse.session():
        return {
            name: warehouse.query(f"SELECT * FROM {name} WHERE as_of_date = :d", {"d": as_of})
            for name in tables
        }


def made_in_python(
    tables: Mapping[str, Spooled | pd.DataFrame], seconds: Mapping[str, float] | None = None
) -> dict[str, Made]:
    """The warehouse tables made in pandas, with the seconds each took (a spooled table's
    own, unless given); scratch tables are part of the ones after them."""
    return {
        name: Made(len(t), round(t.seconds if seconds is None else seconds[name], 3))
        for name, t in tables.items()
        if name not in SCRATCH_TABLES
    }


def build_times(run_id: str, tables: Mapping[str, Made], as_of: date) -> Write:
    """etl_table_build's rows of a night: each table's rows and the seconds it took to make."""
    rows = pd.DataFrame(
        {
            "run_id": run_id,
            "as_of_date": pd.Timestamp(as_of),
            "table_name": list(tables),
            "rows_built": [t.rows for t in tables.values()],
            "seconds": [t.seconds for t in tables.values()],
        }
    )
    return Write("etl_table_build", rows)


def table_writes(tables: Mapping[str, pd.DataFrame | Spooled], as_of: date) -> list[Write]:
    """Current-state tables are replaced whole; the others only in the as-of day's slice;
    scratch tables live in the load's transaction only. A table whose columns drift from the
    contract is refused before anything is written."""
    for name, frame in tables.items():
        # a night without deals yields its marts as bare empty frames
        if len(frame.columns) and name not in SCRATCH_TABLES:
            check_contract(name, list(frame.columns))
    return [
        Write(name, frame, replace="all")
        if name in CURRENT_STATE_TABLES
        else Write(name, frame, replace="scratch")
        if name in SCRATCH_TABLES
        else Write(
            name,
            frame,
            replace="where",
            where="as_of_date = :as_of_date",
            params={"as_of_date": as_of},
        )
        for name, frame in tables.items()
    ]


def state_writes(staging: list[Write], prepared: PreparedState) -> list[Write]:
    """The canonical state as read (`staging`: the staging tables and watermarks) and the
    stage stays derived from it alone (fct_stage_interval): every run that reads the source
    writes both, so the SQL-made tables of any day read stays that match the state."""
    check_contract("fct_stage_interval", list(prepared.intervals.columns))
    return [*staging, Write("fct_stage_interval", prepared.intervals, replace="all")]


def rows_kept(writes: list[Write], built: Mapping[str, Made]) -> int:
    """The rows the writes and the SQL builds leave in the warehouse (scratch tables' are
    gone at the commit)."""
    written = sum(len(w.rows) for w in writes if w.replace != "scratch")
    return written + sum(m.rows for m in built.values())


def _watermark_writes(
    source_label: str,
    newest: dict[str, pd.Timestamp],
    previous: dict[str, datetime],
    loaded_at: datetime,
) -> list[Write]:
    """Each table's watermark is the newest updated_at the source gave (the source's clock),
    quarantined rows included: they are read again by key until they pass."""
    marks = {name: pd.Timestamp(mark) for name, mark in previous.items()} | newest
    rows = pd.DataFrame(
        {
            "source": source_label,
            "table_name": list(marks),
            "watermark": list(marks.values()),
            "updated_at": loaded_at,
        }
    )
    return [
        Write(
            "etl_watermark",
            rows,
            replace="where",
            where="source = :source",
            params={"source": source_label},
        )
    ]


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RunRecord:
    """One etl_run row: what ran, with which parameters, and how it ended. It is written as
    `running` when the run starts, in a transaction of its own, so a run killed outright
    stays visible; the next run on the machine marks it `abandoned`."""

    flow: str
    parameters: dict[str, Any]
    as_of: date | None
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started: datetime = field(default_factory=lambda: utc_now())

    def row(self, status: str, **counts: Any) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "run_id": self.run_id,
                    "flow": self.flow,
                    "parameters": json.dumps(self.parameters, default=str),
                    "status": status,
                    "as_of_date": pd.Timestamp(self.as_of) if self.as_of else None,
                    "started_at": self.started,
                    "finished_at": None if status == "running" else utc_now(),
                    "process": this_process(),
                    **counts,
                }
            ]
        )

    def write(self, status: str, **counts: Any) -> Write:
        """The run's row, in place of the one written before (`running`)."""
        return Write("etl_run", self.row(status, **counts), replace="keys", keys=("run_id",))

    def start(self, warehouse_url: str) -> None:
        warehouse = open_warehouse(warehouse_url)
        warehouse.ensure_schema()
        warehouse.apply([*abandoned_runs(warehouse), self.write("running")])


def abandoned_runs(warehouse: Any) -> list[Write]:
    """Runs still `running` whose process on this machine is gone: killed, or the machine
    went down. (A run on another machine cannot be checked from here.)"""
    running = warehouse.query("SELECT * FROM etl_run WHERE status = 'running'")
    if running.empty:
        return []
    host = socket.gethostname()
    where = running.process.fillna(":").str.rpartition(":")
    gone = where[0].eq(host) & ~where[2].map(lambda pid: pid.isdigit() and _running(int(pid)))
    if not gone.any():
        return []
    rows = running[gone.to_numpy()].assign(
        status="abandoned", error="the run ended without a word (killed, or the machine went down)"
    )
    return [Write("etl_run", rows, replace="keys", keys=("run_id",))]


@contextmanager
def recorded(run: RunRecord, warehouse_url: str) -> Iterator[RunRecord]:
    """Record the run as running, and a failure as failed (the load itself was rolled back
    or never began)."""
    run.start(warehouse_url)
    try:
        yield run
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        writes = [run.write("failed", error=message[:1000])]
        if isinstance(exc, DataQualityError):
            writes.append(Write("dq_result", exc.results))
        try:
            warehouse = open_warehouse(warehouse_url)
            warehouse.ensure_schema()
            warehouse.apply(writes)
        except Exception:  # the warehouse itself may be what failed
            get_run_logger().warning("could not record the failed run in etl_run")
        raise


@dataclass
class Synced:
    """The canonical state after reading the source, and the writes that would record it."""

    state: dict[str, pd.DataFrame]
    writes: list[Write]
    # rows read per table: the frames as read are let go once the gate has typed them
    extracted_rows: dict[str, int]
    verdict: Verdict
    incremental: bool

    @property
    def rows_extracted(self) -> int:
        return sum(self.extracted_rows.values())

    @property
    def mode(self) -> str:
        return "incremental" if self.incremental else "full refresh"


def sync(plan: RunPlan, full_refresh: bool, run: RunRecord) -> Synced:
    """Extract since the watermark (or everything), pass the data-quality gate, and merge
    into the warehouse's state. A table failure stops here, before anything is written."""
    source_key = plan.source.key or plan.source.label
    marks = read_watermarks(plan.warehouse_url, source_key)
    # a source that has been read before (with deals or not: a new team's CRM may have none)
    incremental = not full_refresh and bool(marks)
    since = (marks.get("opportunities", EPOCH) - plan.overlap) if incremental else None
    get_run_logger().info(
        "extracting %s from %s",
        f"changes since {since}" if since else "everything",
        plan.source.label,
    )
    known = read_quality_state(plan.warehouse_url)
    extracted = extract(plan.source, since, known.retry_keys() if incremental else None)
    state = read_state(plan.warehouse_url) if incremental else {}
    verdict = check_quality(extracted, state, plan, known, run.started)
    if verdict.refusals:
        raise DataQualityError(
            "data quality: the run stopped before the load: " + "; ".join(verdict.refusals),
            verdict.results.assign(run_id=run.run_id, checked_at=run.started),
        )
    if verdict.rows_quarantined:
        get_run_logger().warning(
            "%s rows quarantined (see dq_quarantine)", f"{verdict.rows_quarantined:,}"
        )
    kept = passed(extracted, verdict)
    if not incremental:  # a full refresh keeps the last good version of what it holds back
        kept.frames = with_last_good_versions(
            kept.frames, read_held_rows(plan.warehouse_url, verdict.quarantine, kept.frames)
        )
    elif kept.live_opportunity_ids.isna().any():  # a deal without its key is not a deletion
        get_run_logger().warning(
            "deals without an opportunity_id in the source: no deal counts as deleted tonight"
        )
        kept.live_opportunity_ids = pd.concat(
            [kept.live_opportunity_ids.dropna(), state["opportunities"].opportunity_id]
        ).drop_duplicates()
    merged, staging_writes = merge_state(state, kept)
    if incremental:  # a full refresh's extract went through the gate's own stage check
        gone = stages_no_longer_configured(
            merged["opportunities"], merged["stage_history"], plan.stages
        )
        if gone:
            raise StageConfigError(
                "the run stopped before the load: " + "; ".join(gone) + ". Add the stage back "
                "to pipelines, or map it in source.stage_mapping (old stage: configured stage) "
                "and run once with --full-refresh"
            )
    writes = [
        *staging_writes,
        *_watermark_writes(source_key, verdict.newest_updated_at, marks, run.started),
        *quality_writes(verdict, known, extracted, run.run_id, run.started),
    ]
    extracted_rows = {name: len(frame) for name, frame in extracted.frames.items()}
    return Synced(merged, writes, extracted_rows, verdict, incremental)


def default_as_of(timezone: str) -> date:
    """The last complete day in the reporting time zone (a 02:00 run reports yesterday)."""
    return (pd.Timestamp.now(tz=timezone) - pd.Timedelta(days=1)).date()
