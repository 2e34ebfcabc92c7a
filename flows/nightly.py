"""The nightly run: extract since the watermark, merge, transform, load in one transaction."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from loudou.canonical import TABLES, coerce
from loudou.config import Settings, load_settings
from loudou.errors import LoudouError, SourceError
from loudou.source import SourceSpec, check_connection, read_opportunity_keys, read_table
from loudou.warehouse import Write, open_warehouse, staging_table
from transforms.build import CURRENT_STATE_TABLES, BuildParams, build_tables
from transforms.funnel import ConversionRules
from transforms.health import TerritoryRules
from transforms.opportunities import StallRules
from transforms.stages import stage_dimension
from transforms.state import drop_missing_parents, replace_children, upsert

FLOW_NAME = "nightly"


@dataclass(frozen=True)
class NightlyPlan:
    """Everything a run needs, read once from loudou.yaml at the edge."""

    source: SourceSpec
    warehouse_url: str
    timezone: str
    overlap: timedelta
    rules: StallRules
    conversion: ConversionRules
    territory: TerritoryRules
    quick_win_days: int
    stages: pd.DataFrame = field(compare=False, hash=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> NightlyPlan:
        return cls(
            source=SourceSpec(
                kind=settings.source.kind,
                url=settings.source.url,
                timezone=settings.source.timezone,
                stage_mapping=dict(settings.source.stage_mapping),
            ),
            warehouse_url=settings.warehouse.url,
            timezone=settings.timezone,
            overlap=timedelta(minutes=settings.extract.overlap_minutes),
            rules=StallRules(
                no_activity_days=settings.thresholds.no_activity_days,
                close_date_pushes=settings.thresholds.close_date_pushes,
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
            stages=stage_dimension(settings.pipelines),
        )


@dataclass
class Extract:
    """What the source gave this run: changed rows per table and, if incremental, live keys."""

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
    return not isinstance(error, LoudouError) or getattr(error, "transient", False)


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
def extract(source: SourceSpec, since: datetime | None) -> Extract:
    """All canonical tables, or only rows changed after `since` (UTC) when given."""
    check_connection(source)
    frames = {name: read_table(source, name, since) for name in TABLES}
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
    return {
        name: coerce(table, warehouse.read_table(staging_table(name)), "UTC")
        for name, table in TABLES.items()
    }


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
    removed_ids = known[~known.isin(live)]
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
                merged[name] = merged[name][merged[name].opportunity_id.isin(live)]
                key_rows = touched.to_frame("opportunity_id")
            elif name == "activities":
                gone = merged[name].opportunity_id.notna() & ~merged[name].opportunity_id.isin(live)
                key_rows = pd.concat(
                    [rows[["activity_id"]], merged[name].loc[gone, ["activity_id"]]]
                )
                merged[name] = merged[name][~gone]
            writes.append(
                Write(staging_table(name), rows, replace="keys", keys=table.key, key_rows=key_rows)
            )
    return merged, writes


@task(cache_policy=NO_CACHE)
def build_warehouse_tables(
    state: dict[str, pd.DataFrame], plan: NightlyPlan, as_of: date
) -> dict[str, pd.DataFrame]:
    """Dimensions, facts and marts from the canonical state: pure transforms."""
    day_start, day_end = day_bounds(as_of, plan.timezone)
    params = BuildParams(
        as_of_date=pd.Timestamp(as_of),
        day_start=day_start,
        day_end=day_end,
        timezone=plan.timezone,
        stall=plan.rules,
        conversion=plan.conversion,
        territory=plan.territory,
        quick_win_days=plan.quick_win_days,
    )
    return build_tables(state, plan.stages, params)


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_transient,
    cache_policy=NO_CACHE,
)
def load(warehouse_url: str, writes: list[Write]) -> int:
    return open_warehouse(warehouse_url).apply(writes)


def table_writes(tables: dict[str, pd.DataFrame], as_of: date) -> list[Write]:
    """Current-state tables are replaced whole; the others only in the as-of day's slice."""
    return [
        Write(name, frame, replace="all")
        if name in CURRENT_STATE_TABLES
        else Write(
            name,
            frame,
            replace="where",
            where="as_of_date = :as_of_date",
            params={"as_of_date": as_of},
        )
        for name, frame in tables.items()
    ]


def _watermark_writes(
    source_label: str, extract: Extract, previous: dict[str, datetime], loaded_at: datetime
) -> list[Write]:
    """Each table's watermark is the newest updated_at the source gave (the source's clock)."""
    marks = {}
    for name, frame in extract.frames.items():
        if "updated_at" in frame and frame.updated_at.notna().any():
            marks[name] = frame.updated_at.max()
        elif name in previous:
            marks[name] = pd.Timestamp(previous[name])
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


def _run_row(
    run_id: str,
    parameters: dict[str, Any],
    status: str,
    as_of: date,
    started: datetime,
    **counts: Any,
) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run_id": run_id,
                "flow": FLOW_NAME,
                "parameters": json.dumps(parameters, default=str),
                "status": status,
                "as_of_date": pd.Timestamp(as_of),
                "started_at": started,
                "finished_at": utc_now(),
                **counts,
            }
        ]
    )


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def default_as_of(timezone: str) -> date:
    """The last complete day in the reporting time zone (a 02:00 run reports yesterday)."""
    return (pd.Timestamp.now(tz=timezone) - pd.Timedelta(days=1)).date()


@flow(name=FLOW_NAME, log_prints=True)
def nightly(
    config: str = "loudou.yaml", as_of: date | None = None, full_refresh: bool = False
) -> dict[str, Any]:
    """Extract the CRM, rebuild facts and the day's snapshot, load it all in one transaction."""
    logger = get_run_logger()
    settings = load_settings(config)
    plan = NightlyPlan.from_settings(settings)
    as_of = as_of or default_as_of(plan.timezone)
    run_id = str(uuid.uuid4())
    started = utc_now()
    parameters = {"config": str(config), "as_of": str(as_of), "full_refresh": full_refresh}
    source_label = plan.source.label
    try:
        marks = read_watermarks(plan.warehouse_url, source_label)
        incremental = not full_refresh and "opportunities" in marks
        since = (marks["opportunities"] - plan.overlap) if incremental else None
        logger.info(
            "extracting %s from %s",
            f"changes since {since}" if since else "everything",
            source_label,
        )
        extracted = extract(plan.source, since)
        state = read_state(plan.warehouse_url) if incremental else {}
        merged, staging_writes = merge_state(state, extracted)
        tables = build_warehouse_tables(merged, plan, as_of)
        rows_extracted = sum(len(f) for f in extracted.frames.values())
        writes = [
            *staging_writes,
            *table_writes(tables, as_of),
            *_watermark_writes(source_label, extracted, marks, started),
        ]
        rows_loaded = sum(len(w.rows) for w in writes)
        writes.append(
            Write(
                "etl_run",
                _run_row(
                    run_id,
                    parameters,
                    "success",
                    as_of,
                    started,
                    rows_extracted=rows_extracted,
                    rows_quarantined=0,
                    rows_loaded=rows_loaded,
                ),
            )
        )
        load(plan.warehouse_url, writes)
    except Exception as exc:
        _record_failure(plan.warehouse_url, run_id, parameters, as_of, started, exc)
        raise
    summary = {
        "run_id": run_id,
        "as_of": str(as_of),
        "mode": "incremental" if incremental else "full refresh",
        "extracted": {name: len(f) for name, f in extracted.frames.items()},
        "loaded": {name: len(f) for name, f in tables.items()},
        "rows_extracted": rows_extracted,
        "rows_loaded": rows_loaded,
    }
    logger.info("loaded %s rows into %s", rows_loaded, open_warehouse(plan.warehouse_url).label)
    return summary


def _record_failure(
    warehouse_url: str,
    run_id: str,
    parameters: dict[str, Any],
    as_of: date,
    started: datetime,
    exc: Exception,
) -> None:
    """Say in etl_run that the run failed; the load itself was rolled back or never began."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    try:
        warehouse = open_warehouse(warehouse_url)
        warehouse.ensure_schema()
        warehouse.apply(
            [
                Write(
                    "etl_run",
                    _run_row(
                        run_id,
                        parameters,
                        "failed",
                        as_of,
                        started,
                        rows_extracted=None,
                        rows_quarantined=None,
                        rows_loaded=None,
                        error=message[:1000],
                    ),
                )
            ]
        )
    except Exception:  # the warehouse itself may be what failed
        get_run_logger().warning("could not record the failed run in etl_run")


__all__ = ["NightlyPlan", "SourceError", "day_bounds", "nightly"]
