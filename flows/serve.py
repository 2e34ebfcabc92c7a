"""`loudou serve`: the deployments of prefect.yaml, served from this one process, on the
schedules of loudou.yaml, against a Prefect server that runs its scheduler.

A temporary Prefect server (what Prefect starts when no API URL is set) runs no scheduler:
its schedules never create a run. So serve uses the configured server (PREFECT_API_URL), or
starts a real local one (`prefect server start`, UI included) and stops it on the way out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import yaml

from loudou.config import Settings, load_settings
from loudou.errors import LoudouError
from loudou.paths import ROOT

# loudou.yaml's schedule of each scheduled deployment
SCHEDULED = {
    "nightly": "nightly",
    "weekly-digest": "digest",
    "morning-follow-up": "follow_up",
    "conversion-alerts": "alerts",
}
SERVER_START_SECONDS = 90


class ServeError(LoudouError):
    pass


def prefect_yaml() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))


def deployments_for(config: str, settings: Settings) -> list:
    """prefect.yaml's deployments with loudou.yaml's schedules and time zone."""
    from prefect.schedules import Cron

    from flows.alerts import conversion_alerts
    from flows.backfill import backfill
    from flows.digest import weekly_digest
    from flows.follow_up import morning_follow_up
    from flows.nightly import nightly

    flows = {
        "nightly": nightly,
        "weekly-digest": weekly_digest,
        "morning-follow-up": morning_follow_up,
        "conversion-alerts": conversion_alerts,
        "backfill": backfill,
    }
    crons = settings.schedules.model_dump()
    deployments = []
    for entry in prefect_yaml()["deployments"]:
        schedule = SCHEDULED.get(entry["name"])
        deployments.append(
            flows[entry["name"]].to_deployment(
                name=entry["name"],
                description=entry.get("description"),
                parameters={**(entry.get("parameters") or {}), "config": config},
                schedules=[Cron(crons[schedule], timezone=settings.timezone)] if schedule else None,
                concurrency_limit=entry.get("concurrency_limit"),
            )
        )
    return deployments


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def prefect_server(port: int, log: Path) -> Iterator[str]:
    """The configured Prefect server's API URL, or a local server started for the block."""
    from prefect.settings import get_current_settings

    configured = get_current_settings().api.url
    if configured:
        if not _healthy(configured):
            raise ServeError(
                f"serve: the Prefect server at {configured} (PREFECT_API_URL) does not answer; "
                "start it with `prefect server start`, or unset PREFECT_API_URL and loudou "
                "serve starts one"
            )
        yield configured
        return
    api_url = f"http://127.0.0.1:{port}/api"
    if _healthy(api_url):
        raise ServeError(
            f"serve: a Prefect server already answers at {api_url}: point PREFECT_API_URL at "
            "it, or start serve with another --port"
        )
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "prefect"),
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ | {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
            start_new_session=True,  # Ctrl-C reaches serve, which stops the server itself
        )
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while not _healthy(api_url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise ServeError(f"serve: the local Prefect server did not start; see {log}")
            time.sleep(0.5)
        yield api_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=8)
        except subprocess.TimeoutExpired:
            server.kill()


def serve_schedules(config: str, port: int, log: Path) -> None:
    """Serve the deployments until Ctrl-C or SIGTERM."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = load_settings(config)

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    with prefect_server(port, log) as api_url, temporary_settings({PREFECT_API_URL: api_url}):
        follow_up = (
            f", morning-follow-up ({settings.schedules.follow_up})"
            if settings.digest.follow_up_mail
            else ""
        )
        alerts = (
            f", conversion-alerts ({settings.schedules.alerts})"
            if settings.alerts.conversion
            else ""
        )
        print(
            f"serving nightly ({settings.schedules.nightly}), weekly-digest "
            f"({settings.schedules.digest}){follow_up}{alerts} in {settings.timezone}; "
            "Prefect UI: "
            f"{api_url.removesuffix('/api')} (Ctrl-C stops)",
            flush=True,
        )
        with suppress(KeyboardInterrupt):
            serve(*deployments_for(config, settings), print_starting_message=False)
