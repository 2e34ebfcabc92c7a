"""While a table moves from pandas to a SQL file run in the warehouse, both versions must make
the same rows from the same inputs: on the simulator's CRM, on both warehouses.
LOUDOU_PORT_SCALES picks the simulator's scales (the suite runs 0.05; the port was checked at 1
and 5). The forecasts scored are those a backfill of the last five days of October kept."""

from __future__ import annotations

import os
from datetime import date

import pandas as pd
import pytest

from flows.backfill import backfill
from flows.nightly import nightly
from flows.tasks import RunPlan, day_bounds, read_state
from loudou.config import load_settings
from loudou.simulator import simulate, write_crm
from loudou.warehouse import open_warehouse
from tests.conftest import AS_OF, SIM_NOW, write_config
from transforms.build import as_of_view, live_state
from transforms.forecast import bookings, forecast_accuracy
from transforms.intervals import stage_entries
from transforms.snapshot import deals_as_of, tracked_changes

SCALES = [float(s) for s in os.environ.get("LOUDOU_PORT_SCALES", "0.05").split(",")]
KEY = ["forecast_as_of", "period_kind", "period_start", "scope_kind", "scope_id", "method"]


def pandas_accuracy(state, plan: RunPlan, forecasts: pd.DataFrame) -> pd.DataFrame:
    s = live_state(state)
    opportunities = s["opportunities"]
    _, end = day_bounds(AS_OF, plan.timezone)
    entries = stage_entries(opportunities, s["stage_history"])
    changes = tracked_changes(s["field_history"], opportunities)
    then = deals_as_of(opportunities, entries, changes, plan.stages, end)
    actuals = bookings(as_of_view(opportunities, then, end), s["users"], plan.timezone)
    return forecast_accuracy(forecasts, actuals, pd.Timestamp(AS_OF))


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.astype({c: "str" for c in ("period_kind", "scope_kind", "scope_id", "method")})
    out = out.astype({c: "datetime64[us]" for c in ("forecast_as_of", "period_start")})
    return out.sort_values(KEY).reset_index(drop=True).astype({"lead_days": "int64"})


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("kind", ["duckdb", "postgresql"])
def test_the_sql_forecast_accuracy_equals_the_pandas_one(
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
    backfill(config=str(config), start=date(2026, 10, 27), end=date(2026, 10, 31))
    nightly(config=str(config), as_of=AS_OF, full_refresh=True)
    plan = RunPlan.from_settings(load_settings(config))
    warehouse = open_warehouse(url)
    made = warehouse.read_table("mart_forecast_accuracy")
    kept = warehouse.query("SELECT * FROM mart_forecast WHERE period_end < :d", {"d": AS_OF})
    expected = pandas_accuracy(read_state.fn(url), plan, kept)
    assert len(made) > 0 and made.actual.gt(0).any()
    pd.testing.assert_frame_equal(
        sorted_rows(made), sorted_rows(expected[made.columns]), check_dtype=False
    )
