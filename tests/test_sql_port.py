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
from flows.tasks import RunPlan, read_state
from loudou.config import load_settings
from loudou.simulator import simulate, write_crm
from loudou.warehouse import open_warehouse
from tests.conftest import AS_OF, SIM_NOW, write_config
from transforms.build import DealsAt, live_state, prepare
from transforms.movement import pipeline_movement

SCALES = [float(s) for s in os.environ.get("LOUDOU_PORT_SCALES", "0.05").split(",")]
BACKFILLED = [AS_OF - timedelta(days=d) for d in range(5, 0, -1)]
KEY = ["week_start", "scope_kind", "scope_id", "bucket"]


def pandas_movement(state, plan: RunPlan, day) -> pd.DataFrame:
    prepared = prepare(state, plan.stages)
    return pipeline_movement(
        DealsAt.for_days(prepared, plan.movement_weeks),
        live_state(state)["users"],
        as_of_date=pd.Timestamp(day),
        timezone=plan.timezone,
        weeks=plan.movement_weeks,
    )


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype({c: "str" for c in ("scope_kind", "scope_id", "bucket")})
    out = out.sort_values(KEY).reset_index(drop=True)
    dates = ("as_of_date", "week_start", "week_end")
    return out.astype({c: "datetime64[us]" for c in dates} | {"deal_count": "int64"})


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_the_sql_movement_equals_the_pandas_one(
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
    state = read_state.fn(url)
    for day in [*BACKFILLED, AS_OF]:
        made = warehouse.query(
            "SELECT * FROM mart_pipeline_movement WHERE as_of_date = :d", {"d": day}
        )
        expected = pandas_movement(state, plan, day)
        assert len(made) > 0
        pd.testing.assert_frame_equal(
            sorted_rows(made),
            sorted_rows(expected[made.columns]),
            obj=str(day),
            check_dtype=False,
        )
