"""Backfill: rebuild the snapshots and marts of a range of past days, one child flow per day.

The parent first brings the warehouse's canonical state up to date (an incremental read of
the source, like the nightly), then runs `backfill-day` for each day in order. A day rebuilds
exactly the slices a nightly run for that day writes (fct_pipeline_snapshot and the marts), as
they would have been on that day, in its own transaction; the current-state tables are left to
the nightly. Days that a successful run already built are skipped unless `force`.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows.tasks import (
    RunPlan,
    RunRecord,
    build_warehouse_tables,
    load,
    read_state,
    recorded,
    sync,
    table_writes,
)
from loudou.config import Runner, load_settings
from loudou.errors import LoudouError
from loudou.warehouse import open_warehouse

BUILT_BY = ("nightly", "backfill-day")


class BackfillError(LoudouError):
    pass


def backfill_days(start: date, end: date, today: date) -> list[date]:
    """Every day from start to end, refused before any work when the range makes no sense."""
    if start > end:
        raise BackfillError(f"backfill: start {start} is after end {end}")
    if end > today:
        raise BackfillError(f"backfill: end {end} is in the future (today is {today})")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def task_runner(runner: Runner) -> Any:
    """The configured runner for per-day work: threads here, or a Dask cluster."""
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
    return ThreadPoolTaskRunner(max_workers=1)


def days_already_built(warehouse_url: str, days: list[date]) -> set[date]:
    runs = open_warehouse(warehouse_url).query(
        "SELECT DISTINCT as_of_date FROM etl_run WHERE status = 'success' "
        "AND flow IN ('nightly', 'backfill-day') AND as_of_date BETWEEN :start AND :end",
        {"start": days[0], "end": days[-1]},
    )
    return {pd.Timestamp(d).date() for d in runs.as_of_date}


@flow(name="backfill-day", log_prints=True)
def backfill_day(config: str, as_of: date) -> dict[str, Any]:
    """One day's snapshot and marts from the warehouse's canonical state."""
    plan = RunPlan.from_settings(load_settings(config))
    run = RunRecord("backfill-day", {"config": str(config), "as_of": str(as_of)}, as_of)
    with recorded(run, plan.warehouse_url):
        state = read_state(plan.warehouse_url)
        tables = build_warehouse_tables.submit(state, plan, as_of, current=False).result()
        writes = table_writes(tables, as_of)
        rows_loaded = sum(len(w.rows) for w in writes)
        load(
            plan.warehouse_url,
            [
                *writes,
                run.write("success", rows_extracted=0, rows_quarantined=0, rows_loaded=rows_loaded),
            ],
        )
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
        load(
            plan.warehouse_url,
            [
                *synced.writes,
                run.write(
                    "success",
                    rows_extracted=synced.rows_extracted,
                    rows_quarantined=synced.verdict.rows_quarantined,
                    rows_loaded=sum(len(w.rows) for w in synced.writes),
                ),
            ],
        )
    skip = set() if force else days_already_built(plan.warehouse_url, days)
    day_flow = backfill_day.with_options(task_runner=task_runner(settings.runner))
    progress = create_progress_artifact(
        0.0, key="backfill-progress", description=f"backfill {start} to {end}"
    )
    built, skipped = [], []
    for number, day in enumerate(days, start=1):
        if day in skip:
            skipped.append(str(day))
            print(f"[{number}/{len(days)}] {day}: already built, skipped (use --force to rebuild)")
        else:
            result = day_flow(config=config, as_of=day)
            built.append(str(day))
            print(f"[{number}/{len(days)}] {day}: built, {result['rows_loaded']:,} rows")
        update_progress_artifact(progress, 100.0 * number / len(days))
    get_run_logger().info(
        "backfill %s to %s: %d built, %d skipped", start, end, len(built), len(skipped)
    )
    return {"built": built, "skipped": skipped}
