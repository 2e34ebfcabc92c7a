"""Text ids as fast keys: membership, positions, and rows in deal and time order.

pandas' `isin` on its arrow-backed str dtype turns every wanted value into a Python object
first (≈ 2.7 s for 500,000 ids); pyarrow's `is_in` does the same in ≈ 0.1 s.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def is_in(values: pd.Series, wanted: pd.Series | pd.Index | Iterable[str]) -> pd.Series:
    """values.isin(wanted) for id columns; a missing value is never in the set."""
    if not pd.api.types.is_string_dtype(values.dtype):
        return values.isin(wanted).fillna(False) & values.notna()
    wanted = pd.Series(wanted, dtype="str") if not isinstance(wanted, pd.Series) else wanted
    found = pc.is_in(
        pa.array(values.astype("str"), type=pa.large_string(), from_pandas=True),
        value_set=pa.array(wanted.astype("str").dropna(), type=pa.large_string(), from_pandas=True),
        skip_nulls=True,
    )
    return pd.Series(found.to_numpy(zero_copy_only=False), index=values.index, dtype=bool)


def index_is_in(index: pd.Index, wanted: pd.Series | pd.Index | Iterable[str]) -> np.ndarray:
    """index.isin(wanted) for an index of ids, as a boolean array."""
    return is_in(index.to_series(index=None), wanted).to_numpy()


def positions(values: pd.Series, ids: pd.Series | pd.Index) -> np.ndarray:
    """Each value's position in `ids` (unique text ids), -1 where it is not there: the
    integer key a frame joins on, found by pyarrow's hashing instead of pandas' indexer."""
    found = pc.index_in(
        pa.array(values.astype("str"), type=pa.large_string(), from_pandas=True),
        value_set=pa.array(pd.Series(ids).astype("str"), type=pa.large_string(), from_pandas=True),
        skip_nulls=True,
    )
    return found.fill_null(-1).to_numpy().astype("int64")


def deal_time_order(deal: np.ndarray, moments: pd.Series) -> np.ndarray:
    """Row order by integer deal key, then time (a missing time last), ties in the rows'
    own order: one integer lexsort instead of a sort on text ids."""
    when = moments.to_numpy().view("int64")
    when = np.where(moments.isna().to_numpy(), np.iinfo("int64").max, when)
    return np.lexsort((when, deal))
