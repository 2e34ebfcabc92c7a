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
from flows.tasks import RunPlan
from loudou.config import load_settings
from loudou.simulator import simulate, write_crm
from loudou.warehouse import open_warehouse
from tests.conftest import AS_OF, SIM_NOW, write_config
from transforms.funnel import funnel
from transforms.scopes import with_owner_scopes

SCALES = [float(s) for s in os.environ.get("LOUDOU_PORT_SCALES", "0.05").split(",")]
BACKFILLED = [AS_OF - timedelta(days=d) for d in range(5, 0, -1)]


def pandas_funnel(warehouse, plan: RunPlan, day) -> pd.DataFrame:
    snapshot = warehouse.query(
        "SELECT * FROM fct_pipeline_snapshot WHERE as_of_date = :d", {"d": day}
    )
    users = warehouse.read_table("stg_users")
    return funnel(with_owner_scopes(snapshot, users), plan.stages, as_of_date=pd.Timestamp(day))


def sorted_rows(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = frame.sort_values(keys).reset_index(drop=True)
    return out.astype(
        {"open_count": "int64", "stage_order": "int64", "as_of_date": "datetime64[us]"}
    )


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_the_sql_funnel_equals_the_pandas_one(
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
    keys = ["scope_kind", "scope_id", "pipeline", "stage"]
    for day in [*BACKFILLED, AS_OF]:
        made = warehouse.query("SELECT * FROM mart_funnel WHERE as_of_date = :d", {"d": day})
        expected = pandas_funnel(warehouse, plan, day)
        assert len(made) > 0
        pd.testing.assert_frame_equal(
            sorted_rows(made, keys), sorted_rows(expected[made.columns], keys), obj=str(day)
        )
