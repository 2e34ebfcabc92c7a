"""Scopes (company, team, territory, user) and reporting periods, shared by every mart."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

# scope_kind -> the column that holds its id ("all" for the company)
SCOPES: dict[str, str | None] = {
    "company": None,
    "team": "team_id",
    "territory": "territory_id",
    "user": "owner_id",
}
PERIOD_FREQ = {"week": "W-SUN", "month": "M", "quarter": "Q"}


def with_owner_scopes(
    frame: pd.DataFrame, users: pd.DataFrame, owner_column: str = "owner_id"
) -> pd.DataFrame:
    """Add the owner's team_id and territory_id (as the users table has them now)."""
    owners = users.set_index("user_id")
    return frame.assign(
        team_id=frame[owner_column].map(owners.team_id),
        territory_id=frame[owner_column].map(owners.territory_id),
    )


def per_scope(
    frame: pd.DataFrame,
    keys: list[str],
    aggregate: Callable[[pd.core.groupby.DataFrameGroupBy], pd.DataFrame],
    scopes: dict[str, str | None] = SCOPES,
    fixed: dict[str, object] | None = None,
) -> pd.DataFrame:
    """Aggregate `frame` by `keys` once per scope kind; rows carry scope_kind and scope_id.

    `fixed` gives the keys that hold one value for the whole frame: they are set on the result
    instead of grouped on (grouping hashes a constant text column like any other)."""
    fixed = fixed or {}
    varying = [key for key in keys if key not in fixed]
    parts = []
    for kind, column in scopes.items():
        # rows without the scope's id drop out of the grouping (dropna), uncopied
        if frame.empty or (column is not None and frame[column].isna().all()):
            continue
        # the company is one scope: its rows group by a constant number, not a copied text id
        scope = np.zeros(len(frame), dtype="int8") if column is None else frame[column]
        grouped = frame.groupby([scope, *(frame[k] for k in varying)], observed=True, sort=False)
        out = aggregate(grouped)
        out.index = out.index.set_names(["scope_id", *varying])
        out = out.reset_index()
        if column is None:
            out["scope_id"] = "all"
        parts.append(out.assign(scope_kind=kind, **fixed))
    if not parts:  # no rows: the aggregate of none gives the value columns, empty
        none = frame.iloc[:0]
        empty_groups = none.groupby([np.zeros(0, "int8"), *(none[k] for k in varying)])
        values = [c for c in aggregate(empty_groups).columns if c not in keys]
        return pd.DataFrame(columns=["scope_kind", "scope_id", *keys, *values])
    out = pd.concat(parts, ignore_index=True)
    leading = ["scope_kind", "scope_id", *keys]
    return out[leading + [c for c in out.columns if c not in leading]]


def local_time(moments: pd.Series, timezone: str) -> pd.Series:
    """Naive UTC timestamps as naive wall-clock time in the reporting time zone."""
    stamps = pd.to_datetime(moments)
    if timezone == "UTC":
        return stamps
    return stamps.dt.tz_localize("UTC").dt.tz_convert(timezone).dt.tz_localize(None)


def local_date(moments: pd.Series, timezone: str) -> pd.Series:
    """The calendar day of naive UTC timestamps in the reporting time zone."""
    return local_time(moments, timezone).dt.normalize()


def period_start(local_moments: pd.Series, period_kind: str) -> pd.Series:
    """First day of the week (Monday), month or quarter that each local moment falls in."""
    return local_moments.dt.to_period(PERIOD_FREQ[period_kind]).dt.start_time.astype(
        "datetime64[us]"
    )


def recent_period_starts(as_of_date: pd.Timestamp, period_kind: str, count: int) -> pd.Timestamp:
    """Start of the earliest of the `count` periods up to and including the as-of date's."""
    current = pd.Period(as_of_date, PERIOD_FREQ[period_kind])
    return (current - (count - 1)).start_time
