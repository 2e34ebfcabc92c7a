"""mart_pipeline_movement: how the open pipeline moved from the start of a week to its end.

For each scope, the bridge

    start + created + reopened + moved_in + amount_up − amount_down
          − won − lost − moved_out − removed = end

balances in deals and to the cent. A deal open in the scope at the start carries its start
amount; one that enters during the week (created, reopened, moved in from another scope)
enters with its amount at the week's end. Amount changes of deals open at the start are split
out as amount_up and amount_down. A deal leaves as won or lost (closed in the week, counted in
the scope that owned it at the end), moved_out (another scope owns it at the end) or removed
(neither open nor closed any more, e.g. moved to a status loudou does not know).

Deals open in the same scope at both ends also sit in exactly one status bucket, in this
order of precedence: advanced (a later stage), regressed (an earlier stage), pushed_out
(expected close date later), pulled_in (earlier), unchanged. Their amounts are end amounts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from transforms.keys import positions
from transforms.scopes import SCOPES

FLOW_BUCKETS = (
    "start",
    "created",
    "reopened",
    "moved_in",
    "amount_up",
    "amount_down",
    "won",
    "lost",
    "moved_out",
    "removed",
    "end",
)
STATUS_BUCKETS = ("advanced", "regressed", "pushed_out", "pulled_in", "unchanged")
# how each flow bucket enters the balance
SIGN = {
    "start": 1,
    "created": 1,
    "reopened": 1,
    "moved_in": 1,
    "amount_up": 1,
    "amount_down": -1,
    "won": -1,
    "lost": -1,
    "moved_out": -1,
    "removed": -1,
}


def _scope_of(owner: pd.Series, users: pd.DataFrame, column: str | None) -> pd.Series:
    if column is None:
        return pd.Series("all", index=owner.index, dtype=object)
    if column == "owner_id":
        return owner
    return owner.map(users.set_index("user_id")[column])


def _aligned(
    start: pd.DataFrame, end: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The deals at both ends row by row (the end's deals, then those only at the start; a
    missing side all NaN) and which were created in between. Rows are matched by integer
    position: aligning two text-id indexes was a third of the week's time."""
    in_end = positions(start.opportunity_id, end.opportunity_id)
    only_start = np.flatnonzero(in_end < 0)
    start_row = np.full(len(end) + len(only_start), -1)
    start_row[in_end[in_end >= 0]] = np.flatnonzero(in_end >= 0)
    start_row[len(end) :] = only_start
    end_row = np.concatenate([np.arange(len(end)), np.full(len(only_start), -1)])
    b = start.reset_index(drop=True).reindex(start_row).reset_index(drop=True)
    a = end.reset_index(drop=True).reindex(end_row).reset_index(drop=True)
    return b, a, start_row < 0


def week_movement(start: pd.DataFrame, end: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """scope_kind, scope_id, bucket, deal_count, amount for one week.

    `start` and `end` are deals_as_of at the week's two ends (every deal created by then).
    """
    b, a, new = _aligned(start, end)
    open_start, open_end = b.status.eq("open"), a.status.eq("open")
    closed_end = a.status.isin(["won", "lost"])
    a0, a1 = b.amount.fillna(0.0), a.amount.fillna(0.0)
    active = open_start | new  # open at the start, or created during the week
    delta = a1 - a0
    later_stage = a.stage_order > b.stage_order
    earlier_stage = a.stage_order < b.stage_order
    pushed = a.expected_close_date > b.expected_close_date
    pulled = a.expected_close_date < b.expected_close_date
    per_kind = []
    for kind, column in SCOPES.items():
        s = _scope_of(b.owner_id, users, column)
        e = _scope_of(a.owner_id, users, column)
        same = s.eq(e)
        removed = open_start & same & ~open_end & ~closed_end
        stayed = open_start & ~removed
        kept = open_start & open_end & same
        # bucket: (the deals in it, counted in the scope at the start or at the end, amount)
        buckets = {
            "start": (open_start, "start", a0),
            "created": (new & (open_end | closed_end), "end", a1),
            "reopened": (~new & ~open_start & open_end, "end", a1),
            "moved_in": (open_start & ~same & (open_end | closed_end), "end", a1),
            "amount_up": (stayed & (delta > 0), "start", delta),
            "amount_down": (stayed & (delta < 0), "start", -delta),
            "won": (active & a.status.eq("won"), "end", a1),
            "lost": (active & a.status.eq("lost"), "end", a1),
            "moved_out": (open_start & ~same, "start", a1),
            "removed": (removed, "start", a0),
            "end": (open_end, "end", a1),
            "advanced": (kept & later_stage, "start", a1),
            "regressed": (kept & earlier_stage, "start", a1),
            "pushed_out": (kept & ~later_stage & ~earlier_stage & pushed, "start", a1),
            "pulled_in": (kept & ~later_stage & ~earlier_stage & pulled, "start", a1),
            "unchanged": (
                kept & ~later_stage & ~earlier_stage & ~pushed & ~pulled,
                "start",
                a1,
            ),
        }
        per_kind.append(_bucket_totals(s, e, buckets).assign(scope_kind=kind))
    out = pd.concat(per_kind, ignore_index=True)
    return out[["scope_kind", "scope_id", "bucket", "deal_count", "amount"]]


def _bucket_totals(
    start_scope: pd.Series,
    end_scope: pd.Series,
    buckets: dict[str, tuple[pd.Series, str, pd.Series]],
) -> pd.DataFrame:
    """Deal count and amount per scope and bucket, for every scope with a deal in any bucket
    (zero where nothing moved that way). Scopes are counted by integer code: a week has
    sixteen buckets and a million deals, and grouping them by text ids was most of its time."""
    codes, scope_ids = pd.factorize(pd.concat([start_scope, end_scope], ignore_index=True))
    side_codes = {"start": codes[: len(start_scope)], "end": codes[len(start_scope) :]}
    n = len(scope_ids)
    counts = np.zeros((len(buckets), n), dtype="int64")
    amounts = np.zeros((len(buckets), n))
    for i, (mask, side, amount) in enumerate(buckets.values()):
        code = side_codes[side]
        keep = mask.to_numpy(dtype=bool, na_value=False) & (code >= 0)  # no scope: not counted
        counts[i] = np.bincount(code[keep], minlength=n)
        amounts[i] = np.bincount(code[keep], weights=amount.to_numpy("float64")[keep], minlength=n)
    seen = np.flatnonzero(counts.sum(axis=0) > 0)
    return pd.DataFrame(
        {
            "scope_id": np.tile(scope_ids[seen], len(buckets)),
            "bucket": np.repeat(list(buckets), len(seen)),
            "deal_count": counts[:, seen].ravel(),
            "amount": amounts[:, seen].ravel().round(2),
        }
    ).sort_values("scope_id", kind="stable", ignore_index=True)  # each scope's buckets in order


def bridge_gap(movement: pd.DataFrame) -> pd.DataFrame:
    """Per week and scope: start plus the signed flows minus end (0 when it balances)."""
    flows = movement[movement.bucket.isin(FLOW_BUCKETS)].copy()
    sign = flows.bucket.map(SIGN).fillna(-1)  # end counts negative
    flows["deal_gap"] = (
        flows.deal_count.where(~flows.bucket.isin(["amount_up", "amount_down"]), 0) * sign
    )
    flows["amount_gap"] = flows.amount * sign
    return (
        flows.groupby(["week_start", "scope_kind", "scope_id"])[["deal_gap", "amount_gap"]]
        .sum()
        .reset_index()
    )


def pipeline_movement(
    deals_at: Callable[[pd.Timestamp], pd.DataFrame],
    users: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
    timezone: str,
    weeks: int,
    finished_weeks: dict[pd.Timestamp, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The bridge of the last `weeks` weeks (Monday to Monday, reporting time zone); the
    current week runs to the end of the as-of day. `deals_at(moment)` gives deals_as_of.
    `finished_weeks` keeps the week_movement of weeks that have ended, by their start in UTC,
    for the days built after this one: every day of a week reads the same week before."""
    this_week = as_of_date - pd.Timedelta(days=as_of_date.weekday())
    starts = [this_week - pd.Timedelta(weeks=k) for k in range(weeks - 1, -1, -1)]
    ends = [*starts[1:], as_of_date + pd.Timedelta(days=1)]
    to_utc = (
        pd.DatetimeIndex([*starts, ends[-1]])
        .tz_localize(timezone)
        .tz_convert("UTC")
        .tz_localize(None)
    )
    finished = {} if finished_weeks is None else finished_weeks
    parts = []
    for i in range(len(starts)):
        week = finished.get(to_utc[i])
        if week is None:
            week = week_movement(deals_at(to_utc[i]), deals_at(to_utc[i + 1]), users)
            if i < len(starts) - 1:  # the as-of week is still running
                finished[to_utc[i]] = week
        parts.append(week.assign(week_start=starts[i], week_end=ends[i]))
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "as_of_date", as_of_date)
    return out[
        [
            "as_of_date",
            "week_start",
            "week_end",
            "scope_kind",
            "scope_id",
            "bucket",
            "deal_count",
            "amount",
        ]
    ]
