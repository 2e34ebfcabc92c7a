"""Values as they were at a moment, from field history (for snapshots of any past day)."""

from __future__ import annotations

import pandas as pd

from transforms.keys import index_is_in


def value_as_of(current: pd.Series, changes: pd.DataFrame, as_of_end: pd.Timestamp) -> pd.Series:
    """A field's value just before `as_of_end`, for each opportunity in `current`'s index.

    `changes` holds one field's history (opportunity_id, changed_at, old_value, new_value). The
    value is the last change's new_value before the moment; if every change came later, the
    first later change's old_value; with no changes, the current value.
    """
    # grouping keeps the rows' order within each deal: sorting by time alone is enough (and
    # far cheaper than sorting a million deal ids as text)
    ordered = changes.sort_values("changed_at", kind="stable")
    before = ordered[ordered.changed_at < as_of_end].groupby("opportunity_id").new_value.last()
    after = ordered[ordered.changed_at >= as_of_end].groupby("opportunity_id").old_value.first()
    known = before.combine_first(after)
    # history holds text: read it as the field's type rather than turn the field into objects
    if pd.api.types.is_numeric_dtype(current) and not pd.api.types.is_bool_dtype(current):
        known, result = pd.to_numeric(known, errors="coerce"), current.astype("float64")
    elif pd.api.types.is_datetime64_dtype(current):
        known = pd.to_datetime(known, errors="coerce", format="mixed").astype(current.dtype)
        result = current.copy()
    else:
        result = current.astype(object)
    hit = index_is_in(result.index, known.index)
    result[hit] = known.reindex(result.index[hit]).to_numpy()
    return result


def count_pushes(field_history: pd.DataFrame, as_of_end: pd.Timestamp) -> pd.Series:
    """How often each deal's expected close date was moved later, up to the moment."""
    pushes = field_history[
        (field_history.field == "expected_close_date") & (field_history.changed_at < as_of_end)
    ]
    old = pd.to_datetime(pushes.old_value, errors="coerce")
    new = pd.to_datetime(pushes.new_value, errors="coerce")
    return pushes[new > old].groupby("opportunity_id").size()
