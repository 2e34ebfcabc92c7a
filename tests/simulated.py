"""The simulator's CRM turned into warehouse tables without a database, for truth tests."""

from __future__ import annotations

import dataclasses
from datetime import date

import pandas as pd

from flows.tasks import RunPlan, build_warehouse_tables
from loudou.canonical import TABLES, coerce
from loudou.config import Settings
from loudou.simulator import SimulatedCRM
from transforms.build import prepare


def build_from_simulation(
    crm: SimulatedCRM, settings: Settings, as_of: date
) -> dict[str, pd.DataFrame]:
    state = {name: coerce(table, crm.tables[name], "UTC") for name, table in TABLES.items()}
    # twelve weeks of movement, so every weekly bridge can be checked
    plan = dataclasses.replace(RunPlan.from_settings(settings), movement_weeks=12)
    return build_warehouse_tables.fn(prepare(state, plan.stages), plan, as_of)
