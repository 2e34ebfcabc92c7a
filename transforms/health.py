"""Pipeline health in Python: the territories' rebalancing and the hand-overs, both greedy,
one account or deal at a time (mart_territory_load and mart_stalled_deals are SQL files in
sql/marts/)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from transforms.scopes import with_owner_scopes


@dataclass(frozen=True)
class TerritoryRules:
    # a rep is over- or under-loaded beyond this share of the territory median
    tolerance: float = 0.25
    # the rebalancing stops once the territory's coefficient of variation is at or below this
    target_cv: float = 0.25
    # deals at or above this probability stay with the rep who brought them this far
    protected_probability: float = 0.75
    activity_days: int = 30


def gini(values: np.ndarray) -> float:
    values = np.sort(np.asarray(values, dtype=float))
    n, total = len(values), values.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1).dot(values) / (n * total))


def coefficient_of_variation(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    mean = values.mean() if len(values) else 0.0
    return float(values.std() / mean) if mean > 0 else 0.0


def rebalancing(
    load: pd.DataFrame,
    open_deals: pd.DataFrame,
    deal_accounts: pd.Series,
    *,
    as_of_date: pd.Timestamp,
    rules: TerritoryRules,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Account moves from over- to under-loaded reps of a territory, and the imbalance before
    and after (mart_rebalancing, mart_territory_balance).

    Greedy, fewest moves first: while the territory's CV is above target, move the account that
    brings the most and the least loaded reps closest together, among accounts whose open
    deals are all below the protected probability. Stops when no move lowers the CV.
    """
    deals = open_deals.assign(account_id=open_deals.opportunity_id.map(deal_accounts))
    deals = deals[deals.owner_id.isin(load.owner_id) & deals.account_id.notna()]
    per_account = (
        deals.groupby(["owner_id", "account_id"])
        .agg(weighted=("weighted_amount", "sum"), top_probability=("probability", "max"))
        .reset_index()
    )
    movable = per_account[
        (per_account.top_probability < rules.protected_probability) & (per_account.weighted > 0)
    ]
    moves, balance = [], []
    for territory, reps in load.groupby("territory_id"):  # a handful of territories
        weights = dict(zip(reps.owner_id, reps.weighted_amount.astype(float)))
        before = np.array(list(weights.values()))
        candidates = movable[movable.owner_id.isin(weights)]
        taken: set[str] = set()
        cv = coefficient_of_variation(before)
        while cv > rules.target_cv and len(weights) > 1:
            heavy = max(weights, key=weights.get)
            light = min(weights, key=weights.get)
            gap = weights[heavy] - weights[light]
            options = candidates[
                (candidates.owner_id == heavy) & ~candidates.account_id.isin(taken)
            ]
            if options.empty:
                break
            # the account closest to half the gap evens the pair out best
            best = options.iloc[(options.weighted - gap / 2).abs().argmin()]
            trial = dict(weights)
            trial[heavy] -= best.weighted
            trial[light] += best.weighted
            new_cv = coefficient_of_variation(np.array(list(trial.values())))
            if new_cv >= cv:
                break
            weights, cv = trial, new_cv
            taken.add(best.account_id)
            moves.append((territory, best.account_id, heavy, light, best.weighted))
        balance.append(
            (
                territory,
                coefficient_of_variation(before),
                gini(before),
                before.max() / before.min() if before.min() > 0 else np.nan,
                cv,
                len(before),
            )
        )
    move_frame = pd.DataFrame(
        moves,
        columns=[
            "territory_id",
            "account_id",
            "from_owner_id",
            "to_owner_id",
            "weighted_amount_moved",
        ],
    )
    balance_frame = pd.DataFrame(
        balance,
        columns=[
            "territory_id",
            "cv",
            "gini",
            "max_min_ratio",
            "cv_after_rebalancing",
            "rep_count",
        ],
    )
    move_frame.insert(0, "as_of_date", as_of_date)
    balance_frame.insert(0, "as_of_date", as_of_date)
    return move_frame, balance_frame


def handover(
    open_deals: pd.DataFrame,
    users: pd.DataFrame,
    load: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
) -> pd.DataFrame:
    """mart_handover: the open deals of reps who left or are leaving, in the order to act.

    A rep is departing when left_at is set (past or future) or when inactive with open deals.
    Action by probability: from 75% a visit in person with the new owner, from 50% a phone
    introduction, below 50% a call once the others are done. The suggested owner is the least
    loaded active rep of the same team and territory, counting the deals already handed over.
    """
    departing = users[users.left_at.notna() | ~users.is_active.fillna(True).astype(bool)]
    deals = with_owner_scopes(
        open_deals[open_deals.owner_id.isin(departing.user_id)].drop(
            columns="as_of_date", errors="ignore"
        ),
        users,
    )
    deals = deals.sort_values(
        ["owner_id", "probability", "amount"], ascending=[True, False, False]
    ).reset_index(drop=True)
    deals["action"] = np.select(
        [deals.probability >= 0.75, deals.probability >= 0.5], ["visit", "phone"], "later_call"
    )
    deals["priority"] = deals.groupby("owner_id").cumcount() + 1
    available = load[~load.owner_id.isin(departing.user_id)]
    carried = dict(zip(available.owner_id, available.weighted_amount.astype(float)))
    peers_of = available.groupby(["team_id", "territory_id"]).owner_id.agg(list).to_dict()
    suggested = []
    # one deal at a time: each handed-over deal adds to its new owner's load
    for deal in deals.itertuples():
        peers = peers_of.get((deal.team_id, deal.territory_id))
        if not peers:
            suggested.append(None)
            continue
        chosen = min(peers, key=lambda rep: carried[rep])
        carried[chosen] += 0 if np.isnan(deal.weighted_amount) else deal.weighted_amount
        suggested.append(chosen)
    deals["suggested_owner_id"] = suggested
    deals = deals.rename(columns={"owner_id": "departing_owner_id"})
    deals.insert(0, "as_of_date", as_of_date)
    return deals[
        [
            "as_of_date",
            "departing_owner_id",
            "opportunity_id",
            "stage",
            "probability",
            "amount",
            "action",
            "priority",
            "suggested_owner_id",
        ]
    ]
