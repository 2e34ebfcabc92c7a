"""The configured funnel as a frame (dim_stage), the one place stage order and probability live."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


def stage_dimension(pipelines: Iterable[Any]) -> pd.DataFrame:
    """One row per pipeline stage: open stages in order, then the won and the lost stage.

    `pipelines` are objects with name, stages (name, probability, stall_days, required,
    benchmark_rate), won_stage, lost_stage and qualified_stage, as in loudou.yaml.
    """
    rows = []
    for pipeline in pipelines:
        common = {
            "pipeline": pipeline.name,
            "is_required": False,
            "is_qualified": False,
            "is_won": False,
            "is_lost": False,
            "stall_days": None,
            "benchmark_rate": None,
        }
        for order, stage in enumerate(pipeline.stages):
            rows.append(
                common
                | {
                    "stage": stage.name,
                    "stage_order": order,
                    "probability": stage.probability,
                    "stall_days": stage.stall_days,
                    "is_required": stage.required,
                    "is_qualified": stage.name == pipeline.qualified_stage,
                    "benchmark_rate": stage.benchmark_rate,
                }
            )
        k = len(pipeline.stages)
        rows.append(
            common
            | {"stage": pipeline.won_stage, "stage_order": k, "probability": 1.0, "is_won": True}
        )
        rows.append(
            common
            | {
                "stage": pipeline.lost_stage,
                "stage_order": k + 1,
                "probability": 0.0,
                "is_lost": True,
            }
        )
    columns = [
        "pipeline",
        "stage",
        "stage_order",
        "probability",
        "stall_days",
        "is_required",
        "is_qualified",
        "is_won",
        "is_lost",
        "benchmark_rate",
    ]
    return pd.DataFrame(rows, columns=columns).astype(
        {"stall_days": "float64", "stage_order": "int64", "benchmark_rate": "float64"}
    )


def status_probability(status: pd.Series, stage_probability: pd.Series) -> np.ndarray:
    """A won deal is certain, a lost one is nothing; an open one has its stage's probability."""
    return np.where(status.eq("won"), 1.0, np.where(status.eq("lost"), 0.0, stage_probability))


def with_stage_info(
    frame: pd.DataFrame, stages: pd.DataFrame, stage_column: str = "stage"
) -> pd.DataFrame:
    """Join stage order, probability and terminal flags onto rows carrying pipeline + stage."""
    info = stages[["pipeline", "stage", "stage_order", "probability", "is_won", "is_lost"]]
    return frame.merge(
        info.rename(columns={"stage": stage_column}), how="left", on=["pipeline", stage_column]
    )
