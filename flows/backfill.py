"""Backfill: rebuild the snapshots and marts of a range of past days, one child flow per day.

The parent first brings the warehouse's canonical state up to date (an incremental read of
the source, like the nightly) and prepares what every day derives alike from it (the live state,
stage entries and stays). It then builds the days' pandas tables on the configured runner, a few
days per build and a few builds ahead of the one being loaded (worker processes here, or a Dask
cluster); meanwhile it makes the tables whose SQL makes many days at once (ONE_PASS_TABLES) for
up to DAYS_PER_PASS days in one pass, and runs `backfill-day` for each day in order, which loads
that day and makes its other SQL tables. A day rebuilds exactly the slices a nightly run for
that day writes (fct_pipeline_snapshot and the marts), as they would have been on that day, in
its own transaction (but for its pass's tables); the current-state tables are left to the
nightly, except the stage stays (fct_stage_interval), which follow the canonical state the
parent has just read. Days that a successful run already built are skipped unless `force`.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.tasks import (
    DayBuild,
    Made,
    RunPlan,
    RunRecord,
    build_times,
    build_warehouse_tables,
    load,
    load_builds,
    one_pass_builds,
    prepare_state,
    read_state,
    recorded,
    rows_kept,
    state_writes,
    sync,
    table_writes,
)
from loudou.catalog import ONE_PASS_TABLES
from loudou.config import Runner, Settings, load_settings
from loudou.errors import LoudouError
from loudou.warehouse import Write, open_warehouse
from transforms.build import PreparedState

BUILT_BY = ("nightly", "backfill-day")


class BackfillError(LoudouError):
    pass


def progress_line(line: str) -> None:
    """A backfill's progress in the run log and on the terminal, which shows no logs."""
    get_run_logger().info(line)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def backfill_days(start: date, end: date, today: date) -> list[date]:
    """Every day from start to end, refused before any work when the range makes no sense."""
    if start > end:
        raise BackfillError(f"backfill: start {start} is after end {end}")
    if end > today:
        raise BackfillError(f"backfill: end {end} is in the future (today is {today})")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def task_runner(runner: Runner) -> TaskRunner:
    """The configured runner for per-day builds: worker processes on this machine (in this
    process when there is one worker), or a Dask cluster."""
    if runner.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if runner.address:
            return DaskTaskRunner(address=runner.address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": runner.workers,
                "threads_per_worker": 1,
                "dashboard_address": None,
            }
        )
    if runner.workers == 1:
        return ThreadPoolTaskRunner(max_workers=1)
    return ProcessPoolTaskRunner(max_workers=runner.workers)


def workers_report_here() -> AbstractContextManager[Any]:
    """Worker processes report to the API this run reports to: without an API URL configured,
    each would start a temporary Prefect server of its own."""
    api_url = FlowRunContext.get().client.api_url
    return temporary_settings(updates={PREFECT_API_URL: str(api_url)})


class DayTables:
    """A built day's tables on their way to its backfill-day run, with the tables the
    backfill's pass already made for the day. Prefect sends a flow run's parameters to its
    API as JSON, and this, unlike a dict of frames, it cannot encode: the run shows a
    placeholder instead of millions of values."""

    __slots__ = ("build", "made_before")

    def __init__(self, build: DayBuild, made_before: dict[str, Made]):
        self.build = build
        self.made_before = made_before


@dataclass
class BuiltDays:
    """A run of days' tables, in order, up to the first day that failed to build."""

    tables: list[DayBuild]
    error: Exception | None = None


@task(cache_policy=NO_CACHE)
def build_days(prepared: PreparedState, plan: RunPlan, days: list[date]) -> BuiltDays:
    """The pandas tables of `days`, built one after another from one copy of the prepared
    state. A day that fails ends the run with its own error."""
    built = BuiltDays([])
    for day in days:
        try:
            tables = build_warehouse_tables.fn(prepared, plan, day, current=False)
        except Exception as error:
            built.error = error
            break
        built.tables.append(tables)
    return built


# days a build takes at once: enough to pay for handing a worker the prepared state, few
# enough that the first day loads early and the workers finish together
DAYS_PER_BUILD = 4


def runs_of(days: list[date], most: int = DAYS_PER_BUILD) -> list[list[date]]:
    """The days in runs of at most `most`, in order."""
    return [days[i : i + most] for i in range(0, len(days), most)]


def built_ahead(
    runner: TaskRunner, prepared: PreparedState, plan: RunPlan, days: list[date], ahead: int
) -> Iterator[tuple[list[date], PrefectFuture]]:
    """Each run of days with its build, in order, with up to `ahead` later runs' builds
    under way (each holds a copy of the prepared state until it starts)."""
    pending: deque[tuple[list[date], PrefectFuture]] = deque()
    for run_days in runs_of(days):
        parameters = {"prepared": prepared, "plan": plan, "days": run_days}
        pending.append((run_days, runner.submit(build_days, parameters)))
        if len(pending) > ahead:
            yield pending.popleft()
    yield from pending


# days one pass makes the one-pass tables for: the memory a pass takes grows with them (on
# DuckDB, work beyond warehouse.memory_limit spills to its temp_directory)
DAYS_PER_PASS = 31


@task(cache_policy=NO_CACHE)
def make_in_one_pass(plan: RunPlan, days: list[date]) -> dict[date, dict[str, Made]]:
    """The tables made in one pass (the snapshots and the pipeline movement) for all of
    `days`, in one transaction; what each day got of them, its share of the seconds."""
    made = load.fn(plan.warehouse_url, [], one_pass_builds(plan, days))
    warehouse = open_warehouse(plan.warehouse_url)
    per_day: dict[date, dict[str, Made]] = {day: {} for day in days}
    for table, whole in made.items():
        counts = warehouse.query(
            f"SELECT as_of_date, COUNT(*) AS n FROM {table} "
            "WHERE as_of_date BETWEEN :first AND :last GROUP BY as_of_date",
            {"first": days[0], "last": days[-1]},
        )
        rows = dict(zip(pd.to_datetime(counts.as_of_date).dt.date, counts.n, strict=True))
        for day in days:
            per_day[day][table] = Made(int(rows.get(day, 0)), round(whole.seconds / len(days), 3))
    return per_day


def days_already_built(warehouse_url: str, days: list[date]) -> set[date]:
    runs = open_warehouse(warehouse_url).query(
        "SELECT DISTINCT as_of_date FROM etl_run WHERE status = 'success' "
        "AND flow IN ('nightly', 'backfill-day') AND as_of_date BETWEEN :start AND :end",
        {"start": days[0], "end": days[-1]},
    )
    return {pd.Timestamp(d).date() for d in runs.as_of_date}


def day_record(config: str, as_of: date) -> RunRecord:
    return RunRecord("backfill-day", {"config": str(config), "as_of": str(as_of)}, as_of)


@flow(name="backfill-day", log_prints=True)
def backfill_day(config: str, as_of: date, tables: Any = None) -> dict[str, Any]:
    """Load one day's snapshot and marts: `tables` (DayTables) as the parent backfill built
    them, or else built here from the warehouse's canonical state."""
    plan = RunPlan.from_settings(load_settings(config))
    run = day_record(config, as_of)
    with recorded(run, plan.warehouse_url):
        if isinstance(tables, DayTables):
            build, made_before = tables.build, tables.made_before
        else:
            prepared = prepare_state(read_state(plan.warehouse_url), plan)
            build = build_warehouse_tables(prepared, plan, as_of, current=False)
            made_before = {}
        writes = table_writes(build.tables, as_of)

        def closing(built: dict[str, Made]) -> list[Write]:
            rows_loaded = rows_kept(writes, made_before | built)
            return [
                build_times(run.run_id, build.made() | made_before | built, as_of),
                run.write("success", rows_extracted=0, rows_quarantined=0, rows_loaded=rows_loaded),
            ]

        builds = load_builds(plan, as_of, current=False, made_before=made_before)
        built = load(plan.warehouse_url, writes, builds, closing)
        rows_loaded = rows_kept(writes, made_before | built)
    return {"as_of": str(as_of), "rows_loaded": rows_loaded}


@flow(name="backfill", log_prints=True)
def backfill(
    config: str = "loudou.yaml",
    start: date | None = None,
    end: date | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Rebuild the days from start to end (inclusive), one child flow run per day."""
    settings = load_settings(config)
    plan = RunPlan.from_settings(settings)
    if start is None or end is None:
        raise BackfillError("backfill: both start and end dates are required")
    today = pd.Timestamp.now(tz=plan.timezone).date()
    days = backfill_days(start, end, today)
    run = RunRecord(
        "backfill",
        {"config": str(config), "start": str(start), "end": str(end), "force": force},
        None,
    )
    with recorded(run, plan.warehouse_url):
        synced = sync(plan, False, run)
        prepared = prepare_state(synced.state, plan)
        writes = state_writes(synced.writes, prepared)
        counts = {
            "rows_extracted": synced.rows_extracted,
            "rows_quarantined": synced.verdict.rows_quarantined,
            "rows_loaded": rows_kept(writes, {}),
            "mode": synced.mode,
        }
        load(plan.warehouse_url, [*writes, run.write("running", **counts)])
        built, skipped = _build_days(config, settings, plan, prepared, days, force, (start, end))
        load(plan.warehouse_url, [run.write("success", **counts)])
    get_run_logger().info(
        "backfill %s to %s: %d built, %d skipped", start, end, len(built), len(skipped)
    )
    return {"built": [str(d) for d in built], "skipped": [str(d) for d in skipped]}


def _build_days(
    config: str,
    settings: Settings,
    plan: RunPlan,
    prepared: PreparedState,
    days: list[date],
    force: bool,
    span: tuple[date, date],
) -> tuple[list[date], list[date]]:
    """Build the days not built yet (all with `force`), each loaded by its own day run."""
    start, end = span
    skip = set() if force else days_already_built(plan.warehouse_url, days)
    progress = create_progress_artifact(
        0.0, key="backfill-progress", description=f"backfill {start} to {end}"
    )
    label = {day: f"[{number}/{len(days)}] {day}" for number, day in enumerate(days, start=1)}
    skipped = [day for day in days if day in skip]
    for day in skipped:
        progress_line(f"{label[day]}: already built, skipped (use --force to rebuild)")
    update_progress_artifact(progress, 100.0 * len(skipped) / len(days))
    to_build = [day for day in days if day not in skip]
    passes = deque(runs_of(to_build, DAYS_PER_PASS))
    made_before: dict[date, dict[str, Made]] = {}
    built: list[date] = []
    if to_build:
        with workers_report_here(), task_runner(settings.runner) as runner:
            builds = built_ahead(runner, prepared, plan, to_build, settings.runner.workers)
            for run_days, future in builds:
                while run_days[-1] not in made_before:  # while the workers build their days
                    pass_days = passes.popleft()
                    made_before |= make_in_one_pass(plan, pass_days)
                    progress_line(
                        f"{pass_days[0]} to {pass_days[-1]}: {', '.join(ONE_PASS_TABLES)} "
                        f"made in one pass ({len(passes)} passes to go)"
                    )
                future.wait()
                if future.state.is_failed():  # the build itself, not a day in it, failed
                    with recorded(day_record(config, run_days[0]), plan.warehouse_url):
                        future.result()
                run_built = future.result()
                for day, tables in zip(run_days, run_built.tables, strict=False):
                    day_tables = DayTables(tables, made_before[day])
                    result = backfill_day(config=config, as_of=day, tables=day_tables)
                    built.append(day)
                    progress_line(f"{label[day]}: built, {result['rows_loaded']:,} rows")
                    done = len(skipped) + len(built)
                    update_progress_artifact(progress, 100.0 * done / len(days))
                if run_built.error is not None:
                    failed = run_days[len(run_built.tables)]
                    with recorded(day_record(config, failed), plan.warehouse_url):
                        raise run_built.error  # the build's own error, recorded as the day's
    return built, skipped
