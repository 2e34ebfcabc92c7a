"""Values as they were at a moment, from field history (for snapshots of any past day)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from transforms.keys import deal_time_order, positions


@dataclass(frozen=True)
class FieldChanges:
    """The history of the fields a deal's past state needs, made once for many moments (each
    backfilled day, each week's start): per field, its changes in deal and time order with
    the old and new values read as the field's type. Sorting and parsing the text history
    again at every moment was most of the cost of rebuilding a past day."""

    by_field: dict[str, pd.DataFrame]

    @classmethod
    def of(
        cls, field_history: pd.DataFrame, current: pd.DataFrame, fields: tuple[str, ...]
    ) -> FieldChanges:
        """`current`: the deals as they are now (the fields' types come from its columns)."""
        tracked = field_history[field_history.field.isin(fields) & field_history.changed_at.notna()]
        by_field = {}
        for field, changes in tracked.groupby("field", sort=False):
            # rows of a deal together in time order; ties keep the history's order
            deal, _ = pd.factorize(changes.opportunity_id)
            order = deal_time_order(deal, changes.changed_at)
            changes = changes.iloc[order]
            by_field[field] = pd.DataFrame(
                {
                    "opportunity_id": changes.opportunity_id.to_numpy(),
                    "deal": deal[order],
                    "changed_at": changes.changed_at.to_numpy(),
                    # a change without a value says nothing about the field (skipped, as
                    # groupby's last and first skip it)
                    "has_old": changes.old_value.notna().to_numpy(),
                    "has_new": changes.new_value.notna().to_numpy(),
                    "old_value": _typed(changes.old_value, current[field]).to_numpy(),
                    "new_value": _typed(changes.new_value, current[field]).to_numpy(),
                }
            )
        return cls(by_field)

    def value_as_of(self, field: str, current: pd.Series, as_of_end: pd.Timestamp) -> pd.Series:
        """The field's value just before `as_of_end`, for each deal in `current`'s index: the
        last change's new value before the moment; if every change came later, the first
        later change's old value; with no changes, the current value."""
        changes = self.by_field.get(field)
        if changes is None:
            return current
        deal = changes.deal.to_numpy()
        before = changes.changed_at.lt(as_of_end).to_numpy()
        last = _ends(np.flatnonzero(before & changes.has_new.to_numpy()), deal, last=True)
        first = _ends(np.flatnonzero(~before & changes.has_old.to_numpy()), deal, last=False)
        first = first[~np.isin(deal[first], deal[last])]  # deals with no change before
        values = np.concatenate(
            [changes.new_value.to_numpy()[last], changes.old_value.to_numpy()[first]]
        )
        # the change each current deal takes its value from (-1: none, it keeps its own)
        deals = changes.opportunity_id.iloc[np.concatenate([last, first])]
        which = positions(current.index.to_series(index=None), deals)
        taken = which >= 0
        if current.dtype == "str":  # text stays Arrow text: no million Python objects
            joined = pd.concat(
                [current.reset_index(drop=True), pd.Series(values, dtype="str")],
                ignore_index=True,
            )
            pick = np.where(taken, len(current) + which, np.arange(len(current)))
            return pd.Series(joined.array.take(pick), index=current.index, name=current.name)
        result = _typed_like(current)
        result[taken] = values[which[taken]]
        return result


def _ends(rows: np.ndarray, deal: np.ndarray, *, last: bool) -> np.ndarray:
    """Of row positions in deal order, each deal's last (or first) one."""
    if not len(rows):
        return rows
    codes = deal[rows]
    change = codes[1:] != codes[:-1]
    return rows[np.r_[change, True]] if last else rows[np.r_[True, change]]


def _typed(values: pd.Series, like: pd.Series) -> pd.Series:
    """History text read as the field's type rather than turning the field into objects."""
    if pd.api.types.is_numeric_dtype(like) and not pd.api.types.is_bool_dtype(like):
        return pd.to_numeric(values, errors="coerce").astype("float64")
    if pd.api.types.is_datetime64_dtype(like):
        return pd.to_datetime(values, errors="coerce", format="mixed").astype(like.dtype)
    return values.astype(object)


def _typed_like(current: pd.Series) -> pd.Series:
    """A copy of the current values that takes the history's values."""
    if pd.api.types.is_numeric_dtype(current) and not pd.api.types.is_bool_dtype(current):
        return current.astype("float64")
    if pd.api.types.is_datetime64_dtype(current):
        return current.copy()
    return current.astype(object)


def count_pushes(field_history: pd.DataFrame, as_of_end: pd.Timestamp) -> pd.Series:
    """How often each deal's expected close date was moved later, up to the moment."""
    pushes = field_history[
        (field_history.field == "expected_close_date") & (field_history.changed_at < as_of_end)
    ]
    old = pd.to_datetime(pushes.old_value, errors="coerce")
    new = pd.to_datetime(pushes.new_value, errors="coerce")
    return pushes[new > old].groupby("opportunity_id").size()
