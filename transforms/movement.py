"""The weekly pipeline bridge's buckets and its balance check (the mart itself is
sql/marts/mart_pipeline_movement.sql, which says what each bucket holds).

For each scope, start + the inflows - the outflows = end, in deals and to the cent; the
status buckets (advanced, regressed, pushed_out, pulled_in, unchanged) split the deals open in
the same scope at both ends and are not part of the balance.
"""

from __future__ import annotations

import pandas as pd

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
