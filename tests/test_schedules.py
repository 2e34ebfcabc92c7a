"""Schedules that fire: `loudou serve` against a real Prefect server with its scheduler."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from loudou.config import load_settings
from loudou.warehouse import open_warehouse
from tests.conftest import EXAMPLE, ROOT, write_config


def test_prefect_yaml_runs_on_the_schedules_of_loudou_yaml():
    settings = load_settings(EXAMPLE)
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    schedules = {d["name"]: d.get("schedules") or [] for d in spec["deployments"]}
    assert schedules["nightly"] == [
        {"cron": settings.schedules.nightly, "timezone": settings.timezone}
    ]
    assert schedules["weekly-digest"] == [
        {"cron": settings.schedules.digest, "timezone": settings.timezone}
    ]
    assert schedules["morning-follow-up"] == [
        {"cron": settings.schedules.follow_up, "timezone": settings.timezone}
    ]
    assert schedules["conversion-alerts"] == [
        {"cron": settings.schedules.alerts, "timezone": settings.timezone}
    ]
    assert schedules["backfill"] == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _nightly_runs(url: str) -> list[str]:
    try:
        runs = open_warehouse(url).query("SELECT status FROM etl_run WHERE flow = 'nightly'")
    except Exception:  # the warehouse is not made yet, or a run holds its lock
        return []
    return runs.status.tolist()


def test_serve_starts_a_prefect_server_whose_scheduler_runs_the_nightly(tmp_path, sqlite_crm):
    """No manual trigger: the scheduler of the server serve started creates the run, serve
    runs it, and etl_run shows it done. Ctrl-C stops serve and its server in seconds."""
    warehouse = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    config = write_config(
        tmp_path, sqlite_crm, warehouse, schedules={"nightly": "* * * * *", "digest": "0 7 * * 1"}
    )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        # the scheduler looks for runs to create every 5 s instead of every minute
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
    }
    served = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "loudou"),
            "serve",
            "--config",
            str(config),
            "--port",
            str(port),
            "--server-log",
            str(tmp_path / "server.log"),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while "success" not in _nightly_runs(warehouse) and time.monotonic() < deadline:
            assert served.poll() is None, served.stderr.read()[-3000:]
            time.sleep(2)
        assert "success" in _nightly_runs(warehouse)
        api = f"http://127.0.0.1:{port}/api"
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200  # the UI
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=5).json()
        nightly_runs = [r for r in runs if r["name"] and r["auto_scheduled"]]
        assert nightly_runs, "the scheduler created no run"
        assert any(r["state_type"] == "COMPLETED" for r in nightly_runs)
    finally:
        served.send_signal(signal.SIGINT)
        started = time.monotonic()
        _, err = served.communicate(timeout=30)
        stopped_in = time.monotonic() - started
    assert stopped_in < 10, err[-2000:]
    assert err.strip().splitlines()[-1] == "loudou serve: stopped"
    # the local server went with it
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
