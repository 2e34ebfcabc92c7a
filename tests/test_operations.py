"""Backfills, the Dask runner, deployments and `loudou serve`, on a Prefect test server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from prefect import task
from prefect.client.orchestration import get_client
from prefect.settings import get_current_settings
from typer.testing import CliRunner

from flows.backfill import BackfillError, backfill, backfill_day, backfill_days
from flows.nightly import nightly
from loudou.cli import app
from loudou.warehouse import open_warehouse
from tests.conftest import AS_OF, ROOT, write_config
from tests.warehouse_helpers import normalised

SLICES = [
    "fct_pipeline_snapshot",
    "mart_funnel",
    "mart_stage_conversion",
    "mart_sales_metrics",
    "mart_win_loss",
    "mart_hygiene",
    "mart_stalled_deals",
    "mart_territory_load",
    "mart_territory_balance",
    "mart_rebalancing",
    "mart_handover",
    "mart_pipeline_movement",
]
DAY = AS_OF - timedelta(days=3)


def slices(url: str, day) -> dict[str, pd.DataFrame]:
    warehouse = open_warehouse(url)
    return {
        t: normalised(warehouse.query(f"SELECT * FROM {t} WHERE as_of_date = :d", {"d": day}))
        for t in SLICES
    }


def assert_same_slices(left: dict, right: dict) -> None:
    for table in SLICES:
        assert len(left[table]) > 0 or table in ("mart_rebalancing",), table
        pd.testing.assert_frame_equal(left[table], right[table], obj=table)


@pytest.fixture
def configs(tmp_path, sqlite_crm):
    def make(name: str, **overrides) -> tuple[Path, str]:
        folder = tmp_path / name
        folder.mkdir()
        url = f"duckdb:///{folder / 'warehouse.duckdb'}"
        return write_config(folder, sqlite_crm, url, **overrides), url

    return make


def test_a_backfilled_day_equals_the_nightly_run_of_that_day(prefect_server, configs, caplog):
    caplog.set_level(logging.INFO, logger="prefect.flow_runs")
    nightly_config, nightly_url = configs("nightly")
    nightly(config=str(nightly_config), as_of=DAY)

    backfill_config, backfill_url = configs("backfill")
    nightly(config=str(backfill_config), as_of=AS_OF)  # the warehouse is current
    result = backfill(config=str(backfill_config), start=DAY - timedelta(days=1), end=DAY)
    assert result == {"built": [str(DAY - timedelta(days=1)), str(DAY)], "skipped": []}
    assert_same_slices(slices(nightly_url, DAY), slices(backfill_url, DAY))
    printed = caplog.text  # the progress lines, as the terminal shows them
    assert f"[1/2] {DAY - timedelta(days=1)}: built" in printed and f"[2/2] {DAY}: built" in printed

    # days already built are skipped; --force rebuilds them to the same result
    again = backfill(config=str(backfill_config), start=DAY, end=AS_OF)
    assert again == {
        "built": [str(DAY + timedelta(days=i)) for i in (1, 2)],
        "skipped": [str(DAY), str(AS_OF)],
    }
    forced = backfill(config=str(backfill_config), start=DAY, end=DAY, force=True)
    assert forced == {"built": [str(DAY)], "skipped": []}
    assert_same_slices(slices(nightly_url, DAY), slices(backfill_url, DAY))
    runs = open_warehouse(backfill_url).read_table("etl_run")
    assert sorted(runs.flow.value_counts().items()) == [
        ("backfill", 3),
        ("backfill-day", 5),
        ("nightly", 1),
    ]
    assert set(runs.status) == {"success"}
    # each backfilled day's run records what each of its tables cost, as a nightly does
    builds = open_warehouse(backfill_url).query(
        "SELECT b.table_name, b.rows_built, b.seconds FROM etl_table_build b "
        "JOIN etl_run r ON r.run_id = b.run_id WHERE r.flow = 'backfill-day' AND b.as_of_date = :d",
        {"d": DAY},
    )
    assert {"mart_funnel", "mart_forecast", "mart_territory_balance"} <= set(builds.table_name)
    assert len(builds) == 2 * builds.table_name.nunique()  # the day built twice (--force)
    assert (builds.seconds >= 0).all() and builds.rows_built.gt(0).any()


def test_every_runner_builds_the_same_days(prefect_server, configs):
    """Two worker processes (the default), one worker in this process, a two-worker Dask
    cluster, and the day flow run on its own (building from the warehouse) agree."""
    processes_config, processes_url = configs("processes")
    in_process_config, in_process_url = configs("in_process", runner={"workers": 1})
    dask_config, dask_url = configs("dask", runner={"kind": "dask", "workers": 2})
    days = (DAY, DAY + timedelta(days=1))
    for config in (processes_config, in_process_config, dask_config):
        backfill(config=str(config), start=days[0], end=days[-1])
    alone_config, alone_url = configs("alone")
    nightly(config=str(alone_config), as_of=AS_OF)
    for day in days:
        backfill_day(config=str(alone_config), as_of=day)
    for day in days:
        for url in (in_process_url, dask_url, alone_url):
            assert_same_slices(slices(processes_url, day), slices(url, day))


def test_a_day_that_fails_to_build_stops_the_backfill_and_is_recorded(
    prefect_server, configs, monkeypatch
):
    config, url = configs("failing", runner={"workers": 1})  # in process: the patch holds

    @task
    def broken_build(prepared, plan, as_of, current=True):
        raise ValueError(f"no stages for {as_of}\nsecond line")

    monkeypatch.setattr("flows.backfill.build_warehouse_tables", broken_build)
    with pytest.raises(ValueError, match="no stages for"):
        backfill(config=str(config), start=DAY, end=DAY + timedelta(days=1))
    runs = open_warehouse(url).read_table("etl_run")
    day_runs = runs[runs.flow.eq("backfill-day")]
    assert day_runs.status.tolist() == ["failed"]
    assert day_runs.error.tolist() == [f"no stages for {DAY}"]
    assert slices(url, DAY)["mart_funnel"].empty  # nothing of the day was loaded


def test_bad_ranges_are_refused_before_any_work(configs):
    config, url = configs("refused")
    today = pd.Timestamp.now(tz="Asia/Shanghai").date()
    with pytest.raises(BackfillError, match="start 2026-11-10 is after end 2026-11-01"):
        backfill_days(pd.Timestamp("2026-11-10").date(), pd.Timestamp("2026-11-01").date(), today)
    future = today + timedelta(days=3)
    result = CliRunner().invoke(
        app, ["backfill", "--config", str(config), "--start", str(today), "--end", str(future)]
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"loudou: error: backfill: end {future} is in the future (today is {today})"
    )
    result = CliRunner().invoke(
        app, ["backfill", "--config", str(config), "--start", "yesterday", "--end", str(today)]
    )
    assert result.stderr.strip() == (
        "loudou: error: --start: 'yesterday' is not a date (use YYYY-MM-DD)"
    )
    assert not Path(url.split(":///")[1]).exists()  # nothing was touched


def api_env() -> dict[str, str]:
    return os.environ | {
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "PYTHONPATH": str(ROOT),
        "LOUDOU_PROJECT_DIR": str(ROOT),
    }


def deployments() -> dict[str, object]:
    with get_client(sync_client=True) as client:
        return {d.name: d for d in client.read_deployments()}


def test_prefect_yaml_deploys_with_schedules_in_the_configured_time_zone(prefect_server):
    prefect = str(Path(sys.executable).parent / "prefect")
    env = api_env()
    subprocess.run(
        [prefect, "work-pool", "create", "loudou", "--type", "process"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    deployed = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    found = deployments()
    nightly_deployment = found["nightly"]
    [schedule] = nightly_deployment.schedules
    assert schedule.schedule.cron == "0 2 * * *"
    assert schedule.schedule.timezone == "Asia/Shanghai"
    [weekly] = found["weekly-digest"].schedules
    assert (weekly.schedule.cron, weekly.schedule.timezone) == ("0 7 * * 1", "Asia/Shanghai")
    assert found["backfill"].schedules == []
    for deployment in (nightly_deployment, found["weekly-digest"], found["backfill"]):
        assert deployment.concurrency_limit == 1 or deployment.global_concurrency_limit.limit == 1


def test_unknown_deployment_parameters_are_refused_before_any_work(prefect_server):
    from prefect.deployments import run_deployment

    if "backfill" not in deployments():
        test_prefect_yaml_deploys_with_schedules_in_the_configured_time_zone(prefect_server)
    flow_run = run_deployment("backfill/backfill", parameters={"bogus": 1}, timeout=0)
    executed = subprocess.run(
        [str(Path(sys.executable).parent / "prefect"), "flow-run", "execute", str(flow_run.id)],
        env=api_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_failed() or state.is_crashed(), executed.stdout[-2000:]
    assert (
        "Function expects parameters ['config', 'start', 'end', 'force'] but was provided "
        "with parameters ['config', 'bogus']"
    ) in executed.stderr
