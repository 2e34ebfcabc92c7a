"""The night's tables one at a time: every table of the warehouse contract, each once, the
same whether its lanes are made one after another or at once."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd

from flows.tasks import RunPlan, build_params, spool_warehouse_tables
from loudou.canonical import TABLES, coerce
from loudou.catalog import CURRENT_STATE_TABLES, SCRATCH_TABLES, sql_tables
from loudou.paths import SQL_DIR
from tests.conftest import AS_OF
from transforms.build import iter_tables, prepare

SCHEMA = (SQL_DIR / "warehouse" / "schema.sql").read_text(encoding="utf-8")
CONTRACT = {
    t
    for t in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA)
    if t[:4] in ("dim_", "fct_", "mart")
}
# the tables a night makes in Python (with the scratch tables for SQL ones to read); the
# others are SQL files run in the warehouse at the load, and the stage stays, written with
# the state they follow (flows.tasks.state_writes)
BUILT = CONTRACT - {spec.name for spec in sql_tables()} - {"fct_stage_interval"} | set(
    SCRATCH_TABLES
)


def test_a_night_yields_every_contract_table_once_and_a_past_day_its_slices(small_crm, settings):
    state = {name: coerce(table, small_crm.tables[name], "UTC") for name, table in TABLES.items()}
    plan = RunPlan.from_settings(settings)
    prepared = prepare(state, plan.stages)

    night = [name for name, _ in iter_tables(prepared, build_params(plan, AS_OF))]
    assert sorted(night) == sorted(BUILT)  # each once: a dict of them would hide a repeat

    past_day = [name for name, _ in iter_tables(prepared, build_params(plan, AS_OF), current=False)]
    assert sorted(past_day) == sorted(BUILT - set(CURRENT_STATE_TABLES))


def test_a_night_on_two_threads_spools_the_tables_it_spools_on_one(small_crm, settings, tmp_path):
    state = {name: coerce(table, small_crm.tables[name], "UTC") for name, table in TABLES.items()}
    plan = RunPlan.from_settings(settings)
    prepared = prepare(state, plan.stages)
    spooled = {}
    for threads in (1, 2):
        folder = tmp_path / str(threads)
        folder.mkdir()
        one_plan = dataclasses.replace(plan, threads=threads)
        spooled[threads] = spool_warehouse_tables.fn(prepared, one_plan, AS_OF, folder)
    assert list(spooled[2]) == list(spooled[1])
    assert sorted(spooled[2]) == sorted(BUILT)
    for name, table in spooled[1].items():
        pd.testing.assert_frame_equal(spooled[2][name].frame(), table.frame(), obj=name)
