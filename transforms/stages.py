"""The configured funnel as a frame (dim_stage), the one place stage order and probability live."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd


def stage_dimension(pipelines: Iterable[Any]) -> pd.DataFrame:
    """One row per pipeline stage: open stages in order, then the won and the lost stage.

    `pipelines` are objects with name, stages (name, probability, stall_days, required),
    won_stage, lost_stage and qualified_stage, as in loudou.yaml.
    """
    rows = []
    for pipeline in pipelines:
        for order, stage in enumerate(pipeline.stages):
            rows.append(
                (
                    pipeline.name,
                    stage.name,
                    order,
                    stage.probability,
                    stage.stall_days,
                    stage.required,
                    stage.name == pipeline.qualified_stage,
                    False,
                    False,
                )
            )
        k = len(pipeline.stages)
        rows.append((pipeline.name, pipeline.won_stage, k, 1.0, None, False, False, True, False))
        rows.append(
            (pipeline.name, pipeline.lost_stage, k + 1, 0.0, None, False, False, False, True)
        )
    frame = pd.DataFrame(
        rows,
        columns=[
            "pipeline",
            "stage",
            "stage_order",
            "probability",
            "stall_days",
            "is_required",
            "is_qualified",
            "is_won",
            "is_lost",
        ],
    )
    return frame.astype({"stall_days": "float64", "stage_order": "int64"})


def with_stage_info(
    frame: pd.DataFrame, stages: pd.DataFrame, stage_column: str = "stage"
) -> pd.DataFrame:
    """Join stage order, probability and terminal flags onto rows carrying pipeline + stage."""
    info = stages[["pipeline", "stage", "stage_order", "probability", "is_won", "is_lost"]]
    return frame.merge(
        info.rename(columns={"stage": stage_column}), how="left", on=["pipeline", stage_column]
    )
