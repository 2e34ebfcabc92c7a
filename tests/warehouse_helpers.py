"""Read a whole warehouse for comparisons; build a SQL-made table from hand-made rows."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd

from flows.tasks import SqlContext, built_in_memory
from loudou.canonical import TABLES
from loudou.catalog import CURRENT_STATE_TABLES
from loudou.warehouse import open_warehouse, staging_table

DATA_TABLES = [
    *CURRENT_STATE_TABLES,
    "fct_pipeline_snapshot",
    *(staging_table(name) for name in TABLES),
]


def _canonical_value(value: object) -> object:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, (date, datetime, pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (float, np.floating)):
        return round(float(value), 6)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return str(value)


def normalised(frame: pd.DataFrame) -> pd.DataFrame:
    """Order-free and backend-free: every value in one plain form, rows sorted."""
    frame = pd.DataFrame({c: frame[c].astype(object).map(_canonical_value) for c in frame.columns})
    return frame.sort_values(list(frame.columns), key=lambda s: s.astype(str)).reset_index(
        drop=True
    )


def warehouse_contents(url: str, tables: list[str] = DATA_TABLES) -> dict[str, pd.DataFrame]:
    warehouse = open_warehouse(url)
    contents = {name: normalised(warehouse.read_table(name)) for name in tables}
    contents["etl_watermark"] = normalised(
        warehouse.query("SELECT source, table_name, watermark FROM etl_watermark")
    )
    return contents


def assert_same_warehouse(left: dict[str, pd.DataFrame], right: dict[str, pd.DataFrame]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        pd.testing.assert_frame_equal(left[name], right[name], check_dtype=False, obj=name)


def built_by_sql(
    table: str,
    inputs: dict[str, pd.DataFrame],
    *,
    stages: pd.DataFrame,
    as_of: date,
    **context: object,
) -> pd.DataFrame:
    """`table` as its SQL file makes it from `inputs` (flows.tasks.built_in_memory);
    `context`: SqlContext's fields other than the stages."""
    return built_in_memory(table, inputs, as_of, SqlContext(stages, **context))
