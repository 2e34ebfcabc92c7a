"""The loudou benchmark: a simulated CRM in the real PostgreSQL, the floor, and each phase.

    python -m bench.run --scale 100 --out bench/results.json

Ratios to the floor measured in the same run are the figures that count; absolute seconds on a
shared machine are not stable. Phases run the flow's own task bodies without the Prefect engine,
so orchestration overhead is not counted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, suppress
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import monte_carlo
from flows.backfill import backfill as backfill_flow
from flows.nightly import nightly as nightly_flow
from flows.tasks import (
    Made,
    RunPlan,
    check_quality,
    load,
    load_builds,
    made_in_python,
    merge_state,
    passed,
    read_quality_state,
    read_state,
    replay_closed_months,
    spool_folder,
    spool_warehouse_tables,
    state_writes,
    table_writes,
)
from flows.tasks import extract as extract_task
from loudou.canonical import TABLES
from loudou.config import load_settings
from loudou.digest import DigestBuilder, recipients, render
from loudou.paths import ROOT
from loudou.simulator import simulate, write_crm
from loudou.warehouse import open_warehouse
from transforms.build import prepare

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
NOW = datetime(2026, 11, 20, 9, 0)
AS_OF = NOW.date()


@contextmanager
def timed(seconds: dict[str, float], name: str, peaks: dict[str, int] | None = None):
    """The seconds a phase took and, given `peaks`, its peak RSS in MB."""
    reset_peak_rss()
    start = time.perf_counter()
    yield
    seconds[name] = round(time.perf_counter() - start, 3)
    if peaks is not None:
        peaks[name] = monte_carlo.peak_rss_mb()


def reset_peak_rss() -> None:
    """Start this process's peak (VmHWM) afresh from its present size (Linux 4.0+), so each
    phase reports its own."""
    with suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


@contextmanager
def scratch_database(admin_url: str):
    name = f"loudou_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(False)
    finally:
        with admin.connect() as db:
            db.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def generate_source(settings_path: Path, scale: float, url: str) -> dict[str, Any]:
    """A simulated CRM at `scale` written to `url`: its row counts and the seconds taken."""
    settings = load_settings(settings_path)
    phases: dict[str, Any] = {}
    with timed(phases, "generate"):
        crm = simulate(settings.pipeline(), scale=scale, now=NOW, thresholds=settings.thresholds)
    with timed(phases, "write_source"):
        write_crm(crm, url)
    return {"seconds": phases, "rows": {name: len(frame) for name, frame in crm.tables.items()}}


def in_spawned_process(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` in a spawned process, whose memory is not the bench's own (the
    Monte Carlo step runs a lighter program of its own instead: monte_carlo.in_own_process)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(function, *args).result()


def transform_alone(settings_path: Path, threads: int) -> dict[str, Any]:
    """The full transform of the warehouse's state with runner.nightly_threads = `threads`,
    its tables spooled and not loaded: seconds, and the process's peak RSS (the state read
    from the warehouse included)."""
    plan = dataclasses.replace(RunPlan.from_settings(load_settings(settings_path)), threads=threads)
    state = read_state.fn(plan.warehouse_url)
    seconds: dict[str, float] = {}
    with spool_folder() as spool, timed(seconds, "transform"):
        spool_warehouse_tables.fn(prepare(state, plan.stages), plan, AS_OF, spool)
    peak = monte_carlo.peak_rss_mb()
    return {"threads": threads, "seconds": seconds["transform"], "peak_rss_mb": peak}


def floor_seconds(url: str) -> float:
    """Reading every source table the nightly reads with COPY ... TO STDOUT."""
    engine = sa.create_engine(url)
    raw = engine.raw_connection()
    start = time.perf_counter()
    try:
        with raw.cursor() as cursor:
            for table in TABLES.values():
                with cursor.copy(f"COPY {table.native_name} TO STDOUT") as copy:
                    for _ in copy:
                        pass
    finally:
        raw.close()
        engine.dispose()
    return time.perf_counter() - start


def write_config(folder: Path, source_url: str, warehouse_url: str) -> Path:
    text = (ROOT / "loudou.example.yaml").read_text(encoding="utf-8")
    text = text.replace("sqlite:///demo/crm.sqlite", source_url)
    text = text.replace("duckdb:///demo/warehouse.duckdb", warehouse_url)
    path = folder / "loudou.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def nightly_phases(
    plan: RunPlan,
    since: datetime | None,
    phases: dict[str, float],
    peaks: dict[str, int],
    prefix: str,
) -> dict[str, float]:
    """Time a nightly's phases into `phases`; returns each table's seconds, slowest first."""
    warehouse = open_warehouse(plan.warehouse_url)
    warehouse.ensure_schema()
    with timed(phases, f"{prefix}extract", peaks):
        known = read_quality_state.fn(plan.warehouse_url)
        extracted = extract_task.fn(plan.source, since, known.retry_keys() if since else None)
        state = read_state.fn(plan.warehouse_url) if since else {}
    with timed(phases, f"{prefix}validate", peaks):
        verdict = check_quality.fn(extracted, state, plan, known, NOW)
        merged, staging_writes = merge_state(state, passed(extracted, verdict))
        del extracted, state  # as the flow does: only the merged state goes on
    with spool_folder() as spool:
        with timed(phases, f"{prefix}transform", peaks):
            started = time.perf_counter()
            prepared = prepare(merged, plan.stages)
            stays = Made(len(prepared.intervals), round(time.perf_counter() - started, 3))
            tables = spool_warehouse_tables.fn(prepared, plan, AS_OF, spool)
        # the load, and the tables the warehouse makes itself inside its transaction
        with timed(phases, f"{prefix}load", peaks):
            writes = [*state_writes(staging_writes, prepared), *table_writes(tables, AS_OF)]
            built = load.fn(plan.warehouse_url, writes, load_builds(plan, AS_OF))
        # apart from the night's phases: the first night on a new warehouse replays the
        # forecasts of the last closed months, a later night only a month that has closed
        with timed(phases, f"{prefix}replays"):
            replays = replay_closed_months.fn(prepared, plan, AS_OF)
            load.fn(plan.warehouse_url, [replays])
    replayed = Made(len(replays.rows), phases[f"{prefix}replays"])
    made = {"fct_stage_interval": stays, replays.table: replayed, **made_in_python(tables), **built}
    return {name: made[name].seconds for name in sorted(made, key=lambda n: -made[n].seconds)}


def change_one_percent(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.begin() as db:
        changed = db.execute(
            sa.text(
                "UPDATE crm_opportunities SET amount = amount + 100, updated_at = :t "
                "WHERE opportunity_id IN (SELECT opportunity_id FROM crm_opportunities "
                "WHERE status = 'open' ORDER BY opportunity_id LIMIT "
                "(SELECT COUNT(*) / 100 FROM crm_opportunities))"
            ),
            {"t": NOW + timedelta(hours=1)},
        ).rowcount
    engine.dispose()
    return changed


def run(
    scale: float,
    backfill_scale: float,
    backfill_days: int,
    folder: Path,
    admin_url: str = ADMIN_URL,
) -> dict[str, Any]:
    # absolute: a relative warehouse path would be read relative to the config's folder, and
    # the unlink below would miss the file the run writes (a later run would load into it)
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"scale": scale, "date": str(date.today())}
    phases: dict[str, float] = {}
    peaks: dict[str, int] = {}  # MB, each phase its own
    with scratch_database(admin_url) as source:
        settings_path = write_config(folder, source, f"duckdb:///{folder / 'bench.duckdb'}")
        (folder / "bench.duckdb").unlink(missing_ok=True)
        settings = load_settings(settings_path)
        # the simulated CRM is the benchmark's input, not the nightly's memory: it is made
        # and written by a process of its own
        generated = in_spawned_process(generate_source, settings_path, scale, source)
        results["rows"] = generated["rows"]
        phases.update(generated["seconds"])
        phases["floor"] = round(floor_seconds(source), 3)
        plan = RunPlan.from_settings(settings)
        results["nightly_threads"] = plan.threads
        results["full_table_seconds"] = nightly_phases(plan, None, phases, peaks, "full_")
        # runner.nightly_threads 1 and 2 side by side, each in a process of its own
        results["transform_alone"] = [
            in_spawned_process(transform_alone, settings_path, threads) for threads in (1, 2)
        ]
        phases["full_total"] = round(
            sum(phases[f"full_{p}"] for p in ("extract", "validate", "transform", "load")), 3
        )
        results["changed_opportunities"] = change_one_percent(source)
        results["incremental_table_seconds"] = nightly_phases(
            plan, NOW, phases, peaks, "incremental_"
        )
        phases["incremental_total"] = round(
            sum(phases[f"incremental_{p}"] for p in ("extract", "validate", "transform", "load")), 3
        )
        warehouse = open_warehouse(plan.warehouse_url)
        builder = DigestBuilder(warehouse, settings, AS_OF - timedelta(days=AS_OF.weekday()))
        people = recipients(warehouse, settings)
        with timed(phases, "digests", peaks):
            for person in people:
                render(builder, person, settings.digest.language)
        results["digests_rendered"] = len(people)
    # the forecast's simulation at the size: scale 100 = 1M open deals × 10,000 draws
    results["monte_carlo"] = monte_carlo.in_own_process(
        deals=round(10_000 * scale), draws=10_000, owners=max(40, round(40 * scale))
    )
    results["backfill"] = backfill(backfill_scale, backfill_days, folder / "backfill", admin_url)
    results["phases_seconds"] = phases
    floor = phases["floor"]
    results["ratios"] = {
        "full_refresh_vs_floor": round(phases["full_total"] / floor, 2),
        "incremental_vs_full": round(phases["incremental_total"] / phases["full_total"], 3),
        "digests_per_second": round(len(people) / phases["digests"], 2),
    }
    results["peak_rss_mb_by_phase"] = peaks
    results["peak_rss_mb"] = max(peaks.values())  # of the nightly runs and the digests
    return results


def backfill(scale: float, days: int, folder: Path, admin_url: str) -> dict[str, Any]:
    """`days` past days rebuilt at `scale` by the backfill flow itself (its sync, the prepared
    state and the per-day child runs) on a warehouse a nightly run made current. Prefect's
    temporary server, if one is needed, starts with that nightly, outside the clock."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with scratch_database(admin_url) as source:
        config = write_config(folder, source, f"duckdb:///{folder / 'backfill.duckdb'}")
        (folder / "backfill.duckdb").unlink(missing_ok=True)
        settings = load_settings(config)
        write_crm(simulate(settings.pipeline(), scale=scale, now=NOW), source)
        nightly_flow(config=str(config), as_of=AS_OF)
        start = time.perf_counter()
        result = backfill_flow(
            config=str(config),
            start=AS_OF - timedelta(days=days),
            end=AS_OF - timedelta(days=1),
        )
        return {
            "scale": scale,
            "days": days,
            "built": len(result["built"]),
            "workers": settings.runner.workers,
            "seconds": round(time.perf_counter() - start, 3),
        }


def table(results: dict[str, Any]) -> str:
    phases, ratios = results["phases_seconds"], results["ratios"]
    lines = [
        f"loudou benchmark, scale {results['scale']} "
        f"({results['rows']['opportunities']:,} opportunities, "
        f"{results['rows']['stage_history']:,} stage changes), {results['date']}, "
        f"nightly marts on {results['nightly_threads']} thread(s)",
        f"{'phase':<28}{'seconds':>10}",
    ]
    peaks = results["peak_rss_mb_by_phase"]
    lines += [
        f"{name:<28}{value:>10.2f}" + (f"{peaks[name]:>10,} MB peak" if name in peaks else "")
        for name, value in phases.items()
    ]
    lines += [
        f"{'full refresh / floor':<28}{ratios['full_refresh_vs_floor']:>10.2f}   target <= 4",
        f"{'incremental / full':<28}{ratios['incremental_vs_full']:>10.3f}   target <= 0.10",
        f"{'digests per second':<28}{ratios['digests_per_second']:>10.2f}   target >= 20",
        f"{'peak RSS (MB)':<28}{results['peak_rss_mb']:>10}   target <= 3072",
        *(
            f"{'transform alone, threads=' + str(alone['threads']):<28}"
            f"{alone['seconds']:>10.2f}{alone['peak_rss_mb']:>10,} MB peak, own process"
            for alone in results["transform_alone"]
        ),
        f"{'monte carlo':<28}{results['monte_carlo']['seconds']:>10.2f}   "
        f"{results['monte_carlo']['deals']:,} deals x {results['monte_carlo']['draws']:,} draws, "
        f"peak RSS {results['monte_carlo']['peak_rss_mb']} MB",
        f"{'backfill':<28}{results['backfill']['seconds']:>10.2f}   "
        f"{results['backfill']['days']} days at scale {results['backfill']['scale']} on "
        f"{results['backfill']['workers']} workers, "
        "target <= 60 s for 30 days at scale 10",
        "full refresh, seconds to make each table (SQL ones inside the load):",
        *(
            f"  {name:<26}{seconds:>10.2f}"
            for name, seconds in results["full_table_seconds"].items()
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--backfill-scale", type=float, default=10.0)
    parser.add_argument("--backfill-days", type=int, default=30)
    parser.add_argument("--dir", type=Path, default=Path("bench/work"))
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    args = parser.parse_args()
    results = run(args.scale, args.backfill_scale, args.backfill_days, args.dir)
    args.out.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(table(results))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
