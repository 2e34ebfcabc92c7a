"""The simulator's CRM turned into warehouse tables without a database, for truth tests."""

from __future__ import annotations

import pandas as pd

from flows.nightly import day_bounds
from loudou.canonical import TABLES, coerce
from loudou.config import Settings
from loudou.simulator import SimulatedCRM
from transforms.build import BuildParams, build_tables
from transforms.opportunities import StallRules
from transforms.stages import stage_dimension


def build_from_simulation(crm: SimulatedCRM, settings: Settings, as_of) -> dict[str, pd.DataFrame]:
    state = {name: coerce(table, crm.tables[name], "UTC") for name, table in TABLES.items()}
    day_start, day_end = day_bounds(as_of, settings.timezone)
    params = BuildParams(
        as_of_date=pd.Timestamp(as_of),
        day_start=day_start,
        day_end=day_end,
        timezone=settings.timezone,
        stall=StallRules(
            no_activity_days=settings.thresholds.no_activity_days,
            close_date_pushes=settings.thresholds.close_date_pushes,
        ),
        quick_win_days=settings.thresholds.quick_win_days,
    )
    return build_tables(state, stage_dimension(settings.pipelines), params)
