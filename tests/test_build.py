"""The night's tables one at a time: every table of the warehouse contract, each once, the
same whether they are made one after another or at once, each after what it needs."""

from __future__ import annotations

import dataclasses
import re

import pandas as pd

from flows.tasks import RunPlan, build_params, spool_warehouse_tables
from loudou.canonical import TABLES, coerce
from loudou.catalog import CURRENT_STATE_TABLES, SCRATCH_TABLES, load_tables
from loudou.paths import SQL_DIR
from tests.conftest import AS_OF
from transforms.build import STEPS, iter_tables, prepare

SCHEMA = (SQL_DIR / "warehouse" / "schema.sql").read_text(encoding="utf-8")
CONTRACT = {
    t
    for t in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA)
    if t[:4] in ("dim_", "fct_", "mart")
}
# the tables a night makes in Python before the load (with the scratch tables for SQL ones to
# read); the others are made in the load's transaction (SQL files, and Python from what they
# made), the stage stays are written with the state they follow (flows.tasks.state_writes) and
# the replayed forecasts by a current night beside it (flows.tasks.replay_closed_months)
BESIDE_THE_NIGHT = {"fct_stage_interval", "mart_forecast_backtest"}
BUILT = CONTRACT - {spec.name for spec in load_tables()} - BESIDE_THE_NIGHT | set(SCRATCH_TABLES)


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
    assert sorted(spooled[2]) == sorted(spooled[1]) == sorted(BUILT)
    for name, table in spooled[1].items():
        pd.testing.assert_frame_equal(spooled[2][name].frame(), table.frame(), obj=name)


def test_the_largest_product_is_read_by_the_tables_that_need_it_as_soon_as_it_is_made(
    small_crm, settings
):
    """On one thread the cohorts (a row per deal and stage entered) are made, read by stage
    conversion and the qualified deals, and let go, before anything else is made."""
    state = {name: coerce(table, small_crm.tables[name], "UTC") for name, table in TABLES.items()}
    plan = RunPlan.from_settings(settings)
    order = [
        name for name, _ in iter_tables(prepare(state, plan.stages), build_params(plan, AS_OF))
    ]
    readers = sorted(order.index(name) for name in ("mart_stage_conversion", "day_qualified_deal"))
    assert readers[1] == readers[0] + 1
    # and every table after the products it needs
    made = set()
    for name in order:
        assert all(need in made or need not in order for need in STEPS[name].needs), name
        made.add(name)
