"""`loudou serve`: the deployments of prefect.yaml, served from this one process."""

from __future__ import annotations

import yaml
from prefect import serve
from prefect.schedules import Cron

from flows.backfill import backfill
from flows.digest import weekly_digest
from flows.nightly import nightly
from loudou.config import load_settings
from loudou.paths import ROOT

FLOWS = {"nightly": nightly, "weekly-digest": weekly_digest, "backfill": backfill}


def deployments_from_prefect_yaml(config: str, timezone: str) -> list:
    """The same deployments as prefect.yaml, with its schedules in the configured time zone."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    deployments = []
    for entry in spec["deployments"]:
        flow = FLOWS.get(entry["name"])
        if flow is None:
            continue
        crons = [s["cron"] for s in entry.get("schedules") or []]
        deployments.append(
            flow.to_deployment(
                name=entry["name"],
                description=entry.get("description"),
                parameters={**(entry.get("parameters") or {}), "config": config},
                schedules=[Cron(cron, timezone=timezone) for cron in crons] or None,
                concurrency_limit=entry.get("concurrency_limit"),
            )
        )
    return deployments


def serve_schedules(config: str) -> None:
    settings = load_settings(config)
    serve(*deployments_from_prefect_yaml(config, settings.timezone))
