"""The simulator's CRM turned into warehouse tables in a DuckDB in memory, for truth tests."""

from __future__ import annotations

import dataclasses
from datetime import date

import pandas as pd

from flows.tasks import RunPlan, build_warehouse_tables, load_builds, table_writes
from loudou.canonical import TABLES, coerce
from loudou.catalog import SCRATCH_TABLES, load_tables
from loudou.config import Settings
from loudou.simulator import SimulatedCRM
from loudou.warehouse import DuckDBWarehouse, Write, staging_table
from transforms.build import prepare


def build_from_simulation(
    crm: SimulatedCRM, settings: Settings, as_of: date
) -> dict[str, pd.DataFrame]:
    state = {name: coerce(table, crm.tables[name], "UTC") for name, table in TABLES.items()}
    # twelve weeks of movement, so every weekly bridge can be checked
    plan = dataclasses.replace(RunPlan.from_settings(settings), movement_weeks=12)
    tables = build_warehouse_tables.fn(prepare(state, plan.stages), plan, as_of).tables
    warehouse = DuckDBWarehouse("duckdb:///:memory:")
    with warehouse.session():
        warehouse.ensure_schema()
        with warehouse.transaction() as transaction:
            for name, rows in state.items():
                transaction.write(Write(staging_table(name), rows))
            for write in table_writes(tables, as_of):
                transaction.write(write)
            for build in load_builds(plan, as_of):
                transaction.build(build)
        made = {spec.name: warehouse.read_table(spec.name) for spec in load_tables()}
    return {name: t for name, t in tables.items() if name not in SCRATCH_TABLES} | made
