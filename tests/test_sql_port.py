"""While a table moves from pandas to a SQL file run in the warehouse, both versions must make
the same rows from the same inputs: on the simulator's CRM, for a full refresh and for a
backfill of five days, on both warehouses. LOUDOU_PORT_SCALES picks the simulator's scales
(the suite runs 0.05; the port was checked at 1 and 5)."""

from __future__ import annotations

import os
from datetime import timedelta

import pandas as pd
import pytest

from flows.backfill import backfill
from flows.nightly import nightly
from flows.tasks import RunPlan, build_params, build_warehouse_tables, read_state
from loudou.config import load_settings
from loudou.simulator import simulate, write_crm
from loudou.warehouse import open_warehouse
from tests.conftest import AS_OF, SIM_NOW, write_config
from tests.warehouse_helpers import normalised
from transforms.build import prepare
from transforms.health import handover, rebalancing, territory_load
from transforms.scopes import with_owner_scopes

SCALES = [float(s) for s in os.environ.get("LOUDOU_PORT_SCALES", "0.05").split(",")]
BACKFILLED = [AS_OF - timedelta(days=d) for d in range(5, 0, -1)]


def pandas_tables(url: str, plan: RunPlan, day) -> dict[str, pd.DataFrame]:
    """The tables as the pandas versions make them from the warehouse's canonical state."""
    prepared = prepare(read_state.fn(url), plan.stages)
    tables = build_warehouse_tables.fn(prepared, plan, day, current=False)
    params, s = build_params(plan, day), prepared.state
    snapshot = with_owner_scopes(tables["fct_pipeline_snapshot"], s["users"])
    open_deals = snapshot[snapshot.status.eq("open")]
    load = territory_load(
        open_deals,
        s["accounts"],
        s["activities"],
        s["users"],
        s["teams"],
        s["targets"],
        as_of_date=params.as_of_date,
        day_end=params.day_end,
        rules=params.territory,
    )
    accounts = s["opportunities"].set_index("opportunity_id").account_id
    moves, balance = rebalancing(
        load, open_deals, accounts, as_of_date=params.as_of_date, rules=params.territory
    )
    return {
        "mart_territory_load": load,
        "mart_rebalancing": moves,
        "mart_territory_balance": balance,
        "mart_handover": handover(open_deals, s["users"], load, as_of_date=params.as_of_date),
    }


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_the_sql_tables_equal_the_pandas_ones(
    prefect_server, settings, tmp_path, scale, kind, request
):
    crm = simulate(
        settings.pipeline(), scale=scale, seed=5, now=SIM_NOW, thresholds=settings.thresholds
    )
    source = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    write_crm(crm, source)
    url = (
        f"duckdb:///{tmp_path / 'w.duckdb'}"
        if kind == "duckdb"
        else request.getfixturevalue("pg_url")
    )
    config = write_config(tmp_path, source, url, extract__overlap_minutes=0)
    nightly(config=str(config), as_of=AS_OF, full_refresh=True)
    backfill(config=str(config), start=BACKFILLED[0], end=BACKFILLED[-1])
    plan = RunPlan.from_settings(load_settings(config))
    warehouse = open_warehouse(url)
    for day in [*BACKFILLED, AS_OF]:
        for table, expected in pandas_tables(url, plan, day).items():
            made = warehouse.query(f"SELECT * FROM {table} WHERE as_of_date = :d", {"d": day})
            assert len(made) > 0 or table == "mart_rebalancing", table
            print(table, day, len(made), len(expected))
            pd.testing.assert_frame_equal(
                normalised(made), normalised(expected[made.columns]), obj=f"{table} {day}"
            )
