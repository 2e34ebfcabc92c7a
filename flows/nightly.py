"""The nightly run: extract since the watermark, merge, transform, load in one transaction."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.tasks import (
    Made,
    RunPlan,
    RunRecord,
    build_times,
    check_as_of,
    day_bounds,
    default_as_of,
    load,
    load_builds,
    made_in_python,
    newest_current_day,
    prepare_state,
    read_slices,
    recorded,
    replay_closed_months,
    rows_kept,
    spool_folder,
    spool_warehouse_tables,
    state_writes,
    sync,
    table_writes,
)
from loudou.config import load_settings
from loudou.quality import quality_summary
from loudou.warehouse import Write

__all__ = ["day_bounds", "default_as_of", "nightly"]


@flow(name="nightly", log_prints=True)
def nightly(
    config: str = "loudou.yaml", as_of: date | None = None, full_refresh: bool = False
) -> dict[str, Any]:
    """Extract the CRM, rebuild facts, the day's snapshot and marts; load in one transaction.

    A day before the one the current-state tables (fct_opportunity and the others rebuilt
    whole) were built for gets its own slices only: a past day never rolls them back."""
    settings = load_settings(config)
    plan = RunPlan.from_settings(settings)
    as_of = as_of or default_as_of(plan.timezone)
    check_as_of(as_of, plan.timezone)
    run = RunRecord(
        "nightly", {"config": str(config), "as_of": str(as_of), "full_refresh": full_refresh}, as_of
    )
    # the night's tables wait for the load in files, not in memory (see Spooled)
    with recorded(run, plan.warehouse_url), spool_folder() as spool:
        newest = newest_current_day(plan.warehouse_url)
        current = newest is None or as_of >= newest
        synced = sync(plan, full_refresh, run)
        started = time.perf_counter()
        prepared = prepare_state(synced.state, plan)
        # the stays' seconds are the preparation every table of the night shares
        stays = Made(len(prepared.intervals), round(time.perf_counter() - started, 3))
        tables = spool_warehouse_tables(prepared, plan, as_of, spool, current)
        writes = [*state_writes(synced.writes, prepared), *table_writes(tables, as_of)]
        made_here = {"fct_stage_interval": stays, **made_in_python(tables)}
        if current:  # the months closed since the last replay, with the current-state tables
            started = time.perf_counter()
            replays = replay_closed_months(prepared, plan, as_of)
            seconds = round(time.perf_counter() - started, 3)
            writes.append(replays)
            made_here[replays.table] = Made(len(replays.rows), seconds)

        def closing(built: dict[str, Made]) -> list[Write]:
            """The night's record, once the SQL tables are built in the load's transaction."""
            return [
                build_times(run.run_id, made_here | built, as_of),
                run.write(
                    "success",
                    rows_extracted=synced.rows_extracted,
                    rows_quarantined=synced.verdict.rows_quarantined,
                    rows_loaded=rows_kept(writes, built),
                    mode=synced.mode,
                ),
            ]

        built = load(plan.warehouse_url, writes, load_builds(plan, as_of, current), closing)
        made = made_here | built
        rows_loaded = rows_kept(writes, built)
        summary = {
            "run_id": run.run_id,
            "as_of": str(as_of),
            "mode": synced.mode,
            "current_state": "rebuilt" if current else f"kept as of {newest}",
            "extracted": synced.extracted_rows,
            "loaded": {name: m.rows for name, m in made.items()},
            "seconds": {name: m.seconds for name, m in made.items()},
            "rows_extracted": synced.rows_extracted,
            "rows_loaded": rows_loaded,
            "rows_quarantined": synced.verdict.rows_quarantined,
        }
        markdown = night_summary(summary, read_slices(plan.warehouse_url, SUMMARISED, as_of))
    get_run_logger().info("loaded %s rows into %s", rows_loaded, plan.warehouse_label)
    create_markdown_artifact(
        key="nightly-summary",
        markdown=markdown,
        description=f"loudou nightly, as of {as_of}",
    )
    create_markdown_artifact(
        key="data-quality",
        markdown=quality_summary(synced.verdict),
        description=f"loudou data-quality checks, as of {as_of}",
    )
    return summary


SUMMARISED = ("mart_stalled_deals", "mart_hygiene", "mart_funnel")


def night_summary(summary: dict[str, Any], tables: dict[str, pd.DataFrame]) -> str:
    """The night in a few lines for the Prefect UI, from the SUMMARISED tables."""
    stalled = tables["mart_stalled_deals"]
    hygiene = tables["mart_hygiene"].get("kind", pd.Series()).value_counts()
    funnel = tables["mart_funnel"].reindex(
        columns=["scope_kind", "open_count", "open_amount", "weighted_amount"]
    )
    company = funnel[funnel.scope_kind.eq("company")]
    lines = [
        f"# loudou nightly, as of {summary['as_of']} ({summary['mode']})",
        "",
        f"- rows extracted: {summary['rows_extracted']:,}; rows loaded: {summary['rows_loaded']:,}",
        f"- rows quarantined: {summary['rows_quarantined']:,}",
        f"- open pipeline: {int(company.open_count.sum()):,} deals, "
        f"{company.open_amount.sum():,.0f} ({company.weighted_amount.sum():,.0f} weighted)",
        f"- stalled deals: {len(stalled):,}",
        "- hygiene: "
        + (", ".join(f"{kind} {count:,}" for kind, count in hygiene.items()) or "nothing to flag"),
        "",
        "| table | rows | seconds to make |",
        "|---|---:|---:|",
        *(
            f"| {name} | {summary['loaded'][name]:,} | {seconds:.2f} |"
            for name, seconds in sorted(summary["seconds"].items(), key=lambda kv: -kv[1])
        ),
    ]
    return "\n".join(lines)
