"""Tiny hand-made frames for the transform tests."""

from __future__ import annotations

import pandas as pd

from loudou.canonical import TABLES, coerce
from loudou.config import load_settings
from tests.conftest import EXAMPLE
from transforms.stages import stage_dimension

STAGES = stage_dimension(load_settings(EXAMPLE).pipelines)
A, B, C, D = "待沟通", "发现机会", "明确需求", "购买决策"
WON, LOST = "成单完成", "输单"


def ts(text: str | None) -> pd.Timestamp | None:
    return None if text is None else pd.Timestamp(text)


def opportunities(*rows: dict) -> pd.DataFrame:
    defaults = {
        "pipeline": "default",
        "status": "open",
        "amount": 100.0,
        "currency": "CNY",
        "is_deleted": False,
        "account_id": "A1",
        "owner_id": "U1",
    }
    frame = pd.DataFrame([defaults | row for row in rows])
    return coerce(TABLES["opportunities"], frame, "UTC")


def history(*rows: tuple) -> pd.DataFrame:
    """(opportunity_id, changed_at, to_stage, from_stage)"""
    frame = pd.DataFrame(rows, columns=["opportunity_id", "changed_at", "to_stage", "from_stage"])
    return coerce(TABLES["stage_history"], frame, "UTC")


def field_changes(*rows: tuple) -> pd.DataFrame:
    """(opportunity_id, field, changed_at, old_value, new_value)"""
    frame = pd.DataFrame(
        rows, columns=["opportunity_id", "field", "changed_at", "old_value", "new_value"]
    )
    return coerce(TABLES["field_history"], frame, "UTC")
