"""A season: 40 consecutive nights, across a quarter end and a month end, on a CRM that changes
between nights (tests/season.py), lived by a DuckDB and a PostgreSQL warehouse at once (the
PostgreSQL one in a process of its own). Each Monday the digests; one night killed mid-load
and run again; a backfill over days already built and one over missing days. Every night
succeeds, both warehouses end equal, and a full refresh at the end equals what the
incremental nights built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta

from prefect.settings import get_current_settings

from flows.nightly import nightly
from loudou.catalog import CURRENT_STATE_TABLES, SLICE_TABLES
from loudou.warehouse import open_warehouse
from tests.conftest import ROOT
from tests.season import NIGHTS, SEASON_START, live_season
from tests.warehouse_helpers import assert_same_warehouse, normalised, warehouse_contents

STAGING = ["stg_opportunities", "stg_stage_history", "stg_field_history", "stg_users"]
# slices a day may leave empty: no account to move, no conversion flag
MAY_BE_EMPTY = ("mart_rebalancing", "mart_conversion_alert")


def night_contents(url: str, day: date) -> dict:
    """The current-state tables, the staging of deals and the day's slices."""
    contents = warehouse_contents(url, [*CURRENT_STATE_TABLES, *STAGING])
    warehouse = open_warehouse(url)
    for table in SLICE_TABLES:
        rows = warehouse.query(f"SELECT * FROM {table} WHERE as_of_date = :d", {"d": day})
        assert len(rows) > 0 or table in MAY_BE_EMPTY, table
        contents[table] = normalised(rows)
    return contents


def test_a_season_of_nights_on_both_warehouses(prefect_server, tmp_path, pg_url):
    duckdb_folder, pg_folder = tmp_path / "duckdb", tmp_path / "postgresql"
    duckdb_folder.mkdir()
    pg_folder.mkdir()
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "PREFECT_API_URL": str(get_current_settings().api.url),
    }
    pg_season = subprocess.Popen(
        [sys.executable, "-m", "tests.season", str(pg_folder), pg_url, str(NIGHTS)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        measured = {"duckdb": live_season(duckdb_folder, f"duckdb:///{duckdb_folder / 'w.duckdb'}")}
    finally:
        _, err = pg_season.communicate(timeout=1800)
    assert pg_season.returncode == 0, err[-3000:]
    measured["postgresql"] = json.loads((pg_folder / "season.json").read_text(encoding="utf-8"))
    urls = {"duckdb": f"duckdb:///{duckdb_folder / 'w.duckdb'}", "postgresql": pg_url}

    # every night succeeded (the killed one is abandoned, and ran again), the backfills too
    for backend, url in urls.items():
        runs = open_warehouse(url).query("SELECT flow, status FROM etl_run")
        nightly_runs = runs[runs.flow.eq("nightly")].status.value_counts().to_dict()
        assert nightly_runs == {"success": NIGHTS, "abandoned": 1}, backend
        assert set(runs.status[runs.flow.ne("nightly")]) == {"success"}, backend

    # the two warehouses hold the same, every day's slices included
    tables = [*CURRENT_STATE_TABLES, *SLICE_TABLES, *STAGING]
    assert_same_warehouse(*(warehouse_contents(url, tables) for url in urls.values()))

    # a full refresh of the last night builds what the incremental nights built
    last = SEASON_START + timedelta(days=NIGHTS - 1)
    for backend, url in urls.items():
        incremental = night_contents(url, last)
        nightly(config=measured[backend]["config"], as_of=last, full_refresh=True)
        assert_same_warehouse(incremental, night_contents(url, last))
    print("season:", json.dumps(measured))
