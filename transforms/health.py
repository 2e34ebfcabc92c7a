"""Pipeline health: territory load and its rebalancing, hand-overs (mart_stalled_deals is
sql/marts/mart_stalled_deals.sql)."""

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


def _reps(users: pd.DataFrame, teams: pd.DataFrame, day_end: pd.Timestamp) -> pd.DataFrame:
    """Active sellers: users in a territory who have not left and do not manage a team."""
    gone = users.left_at.notna() & (users.left_at < day_end)
    active = users.is_active.fillna(True).astype(bool) & ~gone
    sellers = users[active & users.territory_id.notna() & ~users.user_id.isin(teams.manager_id)]
    return sellers[["user_id", "team_id", "territory_id"]].rename(columns={"user_id": "owner_id"})


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


def territory_load(
    open_deals: pd.DataFrame,
    accounts: pd.DataFrame,
    activities: pd.DataFrame,
    users: pd.DataFrame,
    teams: pd.DataFrame,
    targets: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
    day_end: pd.Timestamp,
    rules: TerritoryRules,
) -> pd.DataFrame:
    """mart_territory_load: per territory and active rep, the open pipeline they carry.

    load_index = the rep's weighted amount ÷ the territory's median; over / under beyond the
    tolerance. suggested_quota shares the territory's target (the reps' targets for the
    as-of month) in proportion to weighted pipeline; without targets it is the weighted pipeline.
    """
    reps = _reps(users, teams, day_end)
    deals = open_deals.groupby("owner_id").agg(
        open_count=("opportunity_id", "size"),
        open_amount=("amount", "sum"),
        weighted_amount=("weighted_amount", "sum"),
    )
    recent = activities[
        (activities.occurred_at < day_end)
        & (activities.occurred_at >= day_end - pd.Timedelta(days=rules.activity_days))
    ]
    month = as_of_date.to_period("M")
    # the month's own targets: not those of a quarter that starts with it
    ends = pd.to_datetime(targets.period_end)
    rep_targets = targets[
        targets.scope_kind.eq("user")
        & targets.period_start.eq(month.start_time)
        & (ends.isna() | ends.le(month.end_time))
    ]
    load = reps.assign(
        open_count=reps.owner_id.map(deals.open_count).fillna(0).astype("int64"),
        open_amount=reps.owner_id.map(deals.open_amount).fillna(0.0).astype("float64"),
        weighted_amount=reps.owner_id.map(deals.weighted_amount).fillna(0.0).astype("float64"),
        account_count=reps.owner_id.map(accounts.groupby("owner_id").size())
        .fillna(0)
        .astype("int64"),
        activity_count_30d=reps.owner_id.map(recent.groupby("owner_id").size())
        .fillna(0)
        .astype("int64"),
        target=reps.owner_id.map(rep_targets.set_index("scope_id").amount).astype("float64"),
    )
    by_territory = load.groupby("territory_id")
    median = by_territory.weighted_amount.transform("median")
    load["load_index"] = (load.weighted_amount / median).where(median > 0)
    load["status"] = np.select(
        [load.load_index > 1 + rules.tolerance, load.load_index < 1 - rules.tolerance],
        ["over", "under"],
        "ok",
    )
    share = load.weighted_amount / by_territory.weighted_amount.transform("sum")
    territory_target = by_territory.target.transform("sum")
    load["suggested_quota"] = np.where(
        territory_target > 0, (share * territory_target).round(-2), load.weighted_amount.round(-2)
    )
    load.insert(0, "as_of_date", as_of_date)
    return load.reset_index(drop=True)


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
