"""Every table a run builds, declared once: its name, the tables it reads, its grain and key,
and how it is made (a SQL file run inside the warehouse, or a Python function: before the
load, or inside it when it reads a table made there, see `load_tables`).

The columns are sql/warehouse/schema.sql's (a built table that drifts from them is refused,
see loudou.warehouse.check_contract). The order tables are built in follows from what they
read (`build_order`), never from where they are listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from graphlib import TopologicalSorter
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from loudou.paths import SQL_DIR

# the canonical state as the warehouse holds it (stg_<table>, loaded by the sync)
STATE = (
    "stg_territories",
    "stg_teams",
    "stg_users",
    "stg_accounts",
    "stg_opportunities",
    "stg_stage_history",
    "stg_field_history",
    "stg_activities",
    "stg_leads",
    "stg_targets",
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    reads: tuple[str, ...]
    grain: str
    key: tuple[str, ...]
    # "sql" (sql/<folder>/<name>.sql, run in the warehouse) or the Python function's path
    made_by: str
    # one slice per as_of_date; otherwise the current state, rebuilt whole by a current run
    sliced: bool = True
    # made for the run's SQL tables to read and dropped before it commits (not in the
    # contract: sql/warehouse/scratch.sql)
    scratch: bool = False
    # its SQL makes any number of days at once (the run days of sql/facts/_days.sql), so a
    # backfill makes a chunk of days in one pass before the days' own runs
    one_pass: bool = False

    @property
    def in_sql(self) -> bool:
        return self.made_by == "sql"

    @property
    def sql_path(self) -> Path:
        """sql/dims, sql/facts or sql/marts, by the table's layer."""
        layer = {"dim": "dims", "fct": "facts"}.get(self.name.split("_")[0], "marts")
        return SQL_DIR / layer / f"{self.name}.sql"


def _dimension(name: str, source: str, key: str) -> TableSpec:
    return TableSpec(name, (source,), f"one row per {key}", (key,), "sql", False)


SCOPED = ("as_of_date", "scope_kind", "scope_id")
PERIOD_SCOPED = ("as_of_date", "period_kind", "period_start", "scope_kind", "scope_id")

TABLES: tuple[TableSpec, ...] = (
    _dimension("dim_territory", "stg_territories", "territory_id"),
    _dimension("dim_team", "stg_teams", "team_id"),
    _dimension("dim_user", "stg_users", "user_id"),
    _dimension("dim_account", "stg_accounts", "account_id"),
    TableSpec("dim_stage", (), "one row per configured stage", ("pipeline", "stage"), "sql", False),
    TableSpec(
        "fct_stage_interval",
        ("stg_opportunities", "stg_stage_history"),
        "one row per stay of a deal in an open stage (rebuilt by every run that reads the source)",
        ("opportunity_id", "entered_at", "stage"),
        "transforms.intervals.stage_intervals",
        False,
    ),
    TableSpec(
        "fct_opportunity",
        (*STATE, "fct_stage_interval"),
        "one row per deal not deleted, its derived columns as of the run's day",
        ("opportunity_id",),
        "transforms.opportunities.opportunity_facts",
        False,
    ),
    TableSpec(
        "day_opportunity",
        (*STATE, "fct_stage_interval"),
        "one row per deal as it was at the as-of day's end, fct_opportunity's columns",
        ("opportunity_id",),
        "transforms.opportunities.opportunity_facts",
        scratch=True,
    ),
    TableSpec(
        "day_stage_limit",
        ("fct_stage_interval",),
        "one row per open stage: the days a deal may stay there as of the day's end",
        ("pipeline", "stage"),
        "transforms.opportunities.stage_limits",
        scratch=True,
    ),
    TableSpec(
        "day_qualified_deal",
        ("stg_opportunities", "stg_stage_history", "fct_stage_interval"),
        "one row per deal that reached a qualified stage by the day's end (any-stage)",
        ("opportunity_id",),
        "transforms.funnel.stage_cohorts",
        scratch=True,
    ),
    TableSpec(
        "fct_pipeline_snapshot",
        ("stg_opportunities", "stg_stage_history", "stg_field_history"),
        "as_of_date × deal open at the day's end or closed that day",
        ("as_of_date", "opportunity_id"),
        "sql",
        one_pass=True,
    ),
    TableSpec(
        "mart_funnel",
        ("fct_pipeline_snapshot", "stg_users"),
        "as_of_date × scope × open stage of the scope's pipeline",
        (*SCOPED, "pipeline", "stage"),
        "sql",
    ),
    TableSpec(
        "mart_stage_conversion",
        ("stg_opportunities", "stg_stage_history", "stg_accounts", "fct_stage_interval"),
        "as_of_date × period × scope × dimension value × funnel × stage",
        (*PERIOD_SCOPED, "dimension", "dimension_value", "funnel", "pipeline", "stage"),
        "transforms.funnel.stage_conversion",
    ),
    TableSpec(
        "mart_sales_metrics",
        ("day_opportunity", "day_qualified_deal", "stg_leads", "stg_users"),
        "as_of_date × period × scope × metric",
        (*PERIOD_SCOPED, "metric"),
        "sql",
    ),
    TableSpec(
        "mart_win_loss",
        ("day_opportunity", "stg_accounts", "fct_stage_interval"),
        "as_of_date × period × scope × dimension value",
        (*PERIOD_SCOPED, "dimension", "dimension_value"),
        "sql",
    ),
    TableSpec(
        "mart_hygiene",
        ("stg_opportunities", "stg_stage_history", "stg_accounts", "fct_stage_interval"),
        "as_of_date × finding (kind, subject)",
        ("as_of_date", "kind", "subject_id"),
        "transforms.hygiene.hygiene",
    ),
    TableSpec(
        "mart_conversion_alert",
        ("mart_stage_conversion",),
        "as_of_date × scope × stage × flag (anomaly, bottleneck) of the last whole week",
        ("as_of_date", "scope_kind", "scope_id", "pipeline", "stage", "kind"),
        "sql",
    ),
    TableSpec(
        "mart_stalled_deals",
        ("day_opportunity", "day_stage_limit"),
        "as_of_date × stalled open deal",
        ("as_of_date", "opportunity_id"),
        "sql",
    ),
    TableSpec(
        "mart_territory_load",
        (
            "fct_pipeline_snapshot",
            "stg_users",
            "stg_teams",
            "stg_accounts",
            "stg_activities",
            "stg_targets",
        ),
        "as_of_date × territory × rep",
        ("as_of_date", "territory_id", "owner_id"),
        "sql",
    ),
    TableSpec(
        "mart_territory_balance",
        ("mart_territory_load", "fct_pipeline_snapshot", "stg_opportunities"),
        "as_of_date × territory",
        ("as_of_date", "territory_id"),
        "transforms.health.rebalancing",
    ),
    TableSpec(
        "mart_rebalancing",
        ("mart_territory_load", "fct_pipeline_snapshot", "stg_opportunities"),
        "as_of_date × account moved",
        ("as_of_date", "account_id"),
        "transforms.health.rebalancing",
    ),
    TableSpec(
        "mart_handover",
        ("mart_territory_load", "fct_pipeline_snapshot", "stg_users"),
        "as_of_date × open deal of a departing rep",
        ("as_of_date", "opportunity_id"),
        "transforms.health.handover",
    ),
    TableSpec(
        "mart_public_pool",
        ("stg_accounts", "stg_users", "stg_activities", "day_opportunity"),
        "as_of_date × account its owner left idle for the configured days",
        ("as_of_date", "account_id"),
        "sql",
    ),
    TableSpec(
        "mart_follow_up",
        ("day_opportunity", "stg_users", "stg_field_history"),
        "as_of_date × active rep × open deal to act on",
        ("as_of_date", "owner_id", "opportunity_id"),
        "sql",
    ),
    TableSpec(
        "mart_forecast",
        ("stg_opportunities", "stg_stage_history", "stg_users", "stg_targets"),
        "as_of_date × period × scope × method",
        (*PERIOD_SCOPED, "method"),
        "transforms.forecast.forecast",
    ),
    TableSpec(
        "mart_forecast_backtest",
        ("stg_opportunities", "stg_stage_history", "stg_field_history", "stg_users", "stg_targets"),
        "forecast replayed as of the first day of a month × month × scope × method; a month's "
        "replays are made once, by the first current run after it closed, and kept",
        ("as_of_date", "period_kind", "period_start", "scope_kind", "scope_id", "method"),
        "transforms.build.replayed_forecasts",
        False,
    ),
    TableSpec(
        "mart_forecast_accuracy",
        (
            "mart_forecast",
            "mart_forecast_backtest",
            "stg_opportunities",
            "stg_stage_history",
            "stg_field_history",
            "stg_users",
        ),
        "forecast made (live or replayed) × period × scope × method, scored once the period closed",
        (
            "forecast_as_of",
            "period_kind",
            "period_start",
            "scope_kind",
            "scope_id",
            "method",
            "origin",
        ),
        "sql",
        False,
    ),
    TableSpec(
        "mart_pipeline_movement",
        ("stg_opportunities", "stg_stage_history", "stg_field_history", "stg_users"),
        "as_of_date × week × scope × movement bucket",
        ("as_of_date", "week_start", "scope_kind", "scope_id", "bucket"),
        "sql",
        one_pass=True,
    ),
)
BY_NAME = {spec.name: spec for spec in TABLES}
# what every run has written by the time its SQL tables are built, whatever its day: the
# state, and the stays derived from it alone (a past day's run leaves the other current-state
# tables as the newest nightly built them)
EVERY_RUN = (*STATE, "fct_stage_interval")
# tables that hold one slice per as_of_date, and those rebuilt whole by a current run
SLICE_TABLES = tuple(spec.name for spec in TABLES if spec.sliced and not spec.scratch)
CURRENT_STATE_TABLES = tuple(spec.name for spec in TABLES if not spec.sliced)
SCRATCH_TABLES = tuple(spec.name for spec in TABLES if spec.scratch)
ONE_PASS_TABLES = tuple(spec.name for spec in TABLES if spec.one_pass)


@cache
def build_order() -> tuple[str, ...]:
    """Every table after the tables it reads (a cycle among them is refused by graphlib)."""
    graph = {spec.name: [r for r in spec.reads if r in BY_NAME] for spec in TABLES}
    return tuple(TopologicalSorter(graph).static_order())


def sql_tables() -> list[TableSpec]:
    """The tables made by SQL files, in build order."""
    return [BY_NAME[n] for n in build_order() if BY_NAME[n].in_sql]


@cache
def load_tables() -> tuple[TableSpec, ...]:
    """The tables made inside the load's transaction, in build order: those made by SQL, and
    those made in Python from a table made there (their inputs exist only in the warehouse)."""
    made: dict[str, TableSpec] = {}
    for name in build_order():
        spec = BY_NAME[name]
        if spec.in_sql or any(read in made for read in spec.reads):
            made[name] = spec
    return tuple(made.values())


def select_input(table: str) -> str:
    """How a table made in the load reads one of its inputs: a slice table's as-of day, or
    the whole of a current-state or staging table."""
    spec = BY_NAME.get(table)
    where = " WHERE as_of_date = :as_of_date" if spec and spec.sliced else ""
    return f"SELECT * FROM {table}{where}"


def sql_text(value: object) -> str:
    """A configured name (a stage, a pipeline) as a SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def sql_real(value: object) -> str:
    """A configured number (a probability, a stall limit) as a SQL double, NULL if unset."""
    number = None if value is None else float(value)  # type: ignore[arg-type]
    shown = "NULL" if number is None or math.isnan(number) else repr(number)
    return f"CAST({shown} AS DOUBLE PRECISION)"


def sql_truth(value: object) -> str:
    return "TRUE" if value else "FALSE"


@cache
def _templates() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(SQL_DIR),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["text"] = sql_text
    environment.filters["real"] = sql_real
    environment.filters["truth"] = sql_truth
    return environment


def render_text(text: str, **context: object) -> str:
    """A SELECT written beside the SQL files, with their macros to import (a test's query)."""
    return _templates().from_string(text).render(**context).strip().rstrip(";")


def render(spec: TableSpec, **context: object) -> str:
    """The SELECT that makes `spec`'s rows: its SQL file with the run's structure (the
    configured stages, the scopes) filled in by Jinja; values stay :name parameters."""
    template = _templates().get_template(spec.sql_path.relative_to(SQL_DIR).as_posix())
    return template.render(**context).strip().rstrip(";")
