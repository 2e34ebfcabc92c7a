"""Stalled deals, territory load, rebalancing and hand-overs on hand-made data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loudou.canonical import TABLES, coerce
from tests.fixtures import STAGES, A, B, C, D, history, opportunities
from tests.warehouse_helpers import built_by_sql
from transforms.health import (
    TerritoryRules,
    coefficient_of_variation,
    gini,
    handover,
    rebalancing,
)
from transforms.intervals import stage_entries, stage_intervals
from transforms.opportunities import stage_limits

AS_OF = pd.Timestamp("2026-03-31")
DAY_END = pd.Timestamp("2026-04-01")


def table(name: str, **columns) -> pd.DataFrame:
    return coerce(TABLES[name], pd.DataFrame(columns), "UTC")


def test_default_stage_limit_is_the_80th_percentile_of_past_stays():
    stages = STAGES.assign(stall_days=np.where(STAGES.stage == A, np.nan, STAGES.stall_days))
    # five finished stays at A of 1, 2, 3, 4 and 10 days: the 80th percentile is 5.2
    opps = opportunities(
        *[
            {"opportunity_id": f"X{d}", "stage": B, "created_at": "2026-01-01"}
            for d in (1, 2, 3, 4, 10)
        ]
    )
    hist = history(*[(f"X{d}", f"2026-01-{1 + d:02d}", B, A) for d in (1, 2, 3, 4, 10)])
    limits = stage_limits(stages, stage_intervals(opps, stage_entries(opps, hist), stages), 0.8)
    limits = limits.set_index("stage").limit_days
    assert limits[A] == pytest.approx(5.2)
    assert limits[B] == 45  # configured


def test_stalled_deals_carry_every_reason_and_a_hint_by_funnel_position():
    facts = pd.DataFrame(
        {
            "opportunity_id": ["S1", "S2", "S3", "OK"],
            "owner_id": "U1",
            "team_id": "T1",
            "territory_id": "R1",
            "pipeline": "default",
            "stage": [A, C, D, B],
            "probability": [0.1, 0.5, 0.75, 0.25],
            "status": "open",
            "days_in_stage": [40, 3, 80, 1],
            "days_since_activity": [30, 2, 1, 1],
            "expected_close_date": pd.to_datetime(
                ["2026-05-01", "2026-03-01", "2026-05-01", "2026-05-01"]
            ),
            "close_date_push_count": [0, 0, 4, 0],
            "amount": 10.0,
            "stall_reasons": [
                "over_stage_limit,no_activity",
                "past_close_date",
                "over_stage_limit,pushed_repeatedly",
                None,
            ],
            "is_stalled": [True, True, True, False],
        }
    )
    limits = pd.DataFrame(
        {"pipeline": "default", "stage": [A, B, C, D], "limit_days": [30.0, 45, 60, 75]}
    )
    inputs = {"day_opportunity": facts, "day_stage_limit": limits}
    out = built_by_sql("mart_stalled_deals", inputs, stages=STAGES, as_of=AS_OF.date())
    out = out.set_index("opportunity_id").sort_index()
    assert list(out.index) == ["S1", "S2", "S3"]
    assert set(out.as_of_date) == {AS_OF}
    assert out.reasons.tolist() == [
        "over_stage_limit,no_activity",
        "past_close_date",
        "over_stage_limit,pushed_repeatedly",
    ]
    assert out.funnel_position.tolist() == ["top", "middle", "bottom"]
    assert "undecided" in out.loc["S1", "hint"]
    assert "competitor" in out.loc["S2", "hint"]
    assert "budget" in out.loc["S3", "hint"]
    assert out.loc["S3", "stage_limit_days"] == 75


USERS = table(
    "users",
    user_id=["M1", "U1", "U2", "U3", "U9", "U8"],
    team_id=["T1"] * 6,
    territory_id=["R1"] * 6,
    is_active=[True, True, True, True, False, False],
    left_at=[None, None, None, None, "2026-03-01", None],
)
TEAMS = table("teams", team_id=["T1"], manager_id=["M1"])


def open_deals(rows: list[tuple]) -> pd.DataFrame:
    """(opportunity_id, owner_id, account_id, amount, probability)"""
    frame = pd.DataFrame(
        rows, columns=["opportunity_id", "owner_id", "account_id", "amount", "probability"]
    )
    return frame.assign(weighted_amount=frame.amount * frame.probability, status="open", stage=A)


DEALS = open_deals(
    [
        ("D1", "U1", "A1", 1000, 0.1),  # U1 carries 100
        ("D2", "U2", "A2", 800, 0.25),  # U2 carries 200
        ("D3", "U3", "A3", 500, 0.5),  # U3 carries 600: A3 250 movable,
        ("D4", "U3", "A4", 200, 0.25),  #   A4 50 movable,
        ("D5", "U3", "A5", 400, 0.75),  #   A5 300 protected (75%)
    ]
)
ACCOUNTS = table(
    "accounts",
    account_id=["A1", "A2", "A3", "A4", "A5", "A6"],
    owner_id=["U1", "U2", "U3", "U3", "U3", "U3"],
)
TARGETS = table(
    "targets",
    scope_kind="user",
    scope_id=["U1", "U2", "U3", "U1"],
    period_start="2026-03-01",
    # the last, a fiscal quarter's quota starting this month, is no month's target
    period_end=[None, None, None, "2026-05-31"],
    amount=[300.0, 300, 300, 9000],
)
ACTIVITIES = table(
    "activities",
    activity_id=["X1", "X2", "X3"],
    owner_id=["U1", "U1", "U2"],
    occurred_at=["2026-03-30", "2026-02-01", "2026-03-20"],
)


def built_load(deals: pd.DataFrame = DEALS, **state: pd.DataFrame) -> pd.DataFrame:
    """mart_territory_load as its SQL file makes it from the day's snapshot and the state (the
    hand-made tables above unless given: users, teams, accounts, activities, targets)."""
    tables = {"users": USERS, "teams": TEAMS, "accounts": ACCOUNTS}
    tables |= {"activities": ACTIVITIES, "targets": TARGETS} | state
    inputs = {f"stg_{name}": rows for name, rows in tables.items()}
    snapshot = deals.assign(as_of_date=AS_OF, pipeline="default")
    inputs["fct_pipeline_snapshot"] = snapshot
    out = built_by_sql("mart_territory_load", inputs, stages=STAGES, as_of=AS_OF.date())
    return out.sort_values("owner_id", ignore_index=True)


def load() -> pd.DataFrame:
    return built_load()


def test_territory_load_against_the_median_rep():
    out = load().set_index("owner_id")
    assert list(out.index) == ["U1", "U2", "U3"]  # the manager and departed reps carry nothing
    assert out.weighted_amount.tolist() == [100, 200, 600]
    assert out.load_index.tolist() == [0.5, 1.0, 3.0]  # the median rep carries 200
    assert out.status.tolist() == ["under", "ok", "over"]
    assert out.account_count.tolist() == [1, 1, 4]
    assert out.activity_count_30d.tolist() == [1, 1, 0]
    # the territory's target of 900 shared by weighted pipeline: 100/900, 200/900, 600/900
    assert out.suggested_quota.tolist() == [100.0, 200.0, 600.0]


def test_a_quota_without_targets_is_the_pipeline_to_the_hundred_a_half_to_the_even_one():
    users = table("users", user_id=["U4", "U5"], team_id="T2", territory_id="R2", is_active=True)
    # weighted 1,250 and 1,350: halves, to 1,200 and 1,400 (as numpy rounds)
    deals = open_deals([("E1", "U4", "A1", 2500, 0.5), ("E2", "U5", "A2", 2700, 0.5)])
    out = built_load(deals, users=users, targets=TARGETS.iloc[:0]).set_index("owner_id")
    assert out.target.isna().all()
    assert out.suggested_quota.tolist() == [1200.0, 1400.0]
    assert out.load_index.tolist() == pytest.approx([1250 / 1300, 1350 / 1300])


def test_imbalance_measures():
    values = np.array([100.0, 200, 600])
    assert coefficient_of_variation(values) == pytest.approx(np.sqrt(140_000 / 3) / 300)
    # Gini: sum of |xi - xj| over all pairs / (2 n^2 mean) = 2*(100+500+400) / (2*9*300)
    assert gini(values) == pytest.approx(2000 / 5400)


def test_rebalancing_moves_the_fewest_unprotected_accounts():
    moves, balance = rebalancing(
        load(),
        DEALS,
        DEALS.set_index("opportunity_id").account_id,
        as_of_date=AS_OF,
        rules=TerritoryRules(),
    )
    # half the gap between U3 (600) and U1 (100) is 250: A3 evens them out; A5 is protected.
    # After it: 350, 200, 350 -> CV 0.236, under the 0.25 target: one move is enough
    assert moves[
        ["account_id", "from_owner_id", "to_owner_id", "weighted_amount_moved"]
    ].values.tolist() == [["A3", "U3", "U1", 250.0]]
    row = balance.iloc[0]
    assert row.cv == pytest.approx(0.7201, abs=1e-4)
    assert row.cv_after_rebalancing == pytest.approx(np.sqrt(15_000 / 3) / 300)
    assert row.max_min_ratio == 6.0


def test_handover_orders_deals_and_spreads_them_over_the_least_loaded_peers():
    departing = open_deals(
        [
            ("H1", "U9", "A1", 100, 0.25),
            ("H2", "U9", "A1", 100, 0.75),
            ("H3", "U9", "A2", 100, 0.5),
            ("H4", "U8", "A2", 50, 0.1),
        ]
    )
    deals = pd.concat([DEALS, departing], ignore_index=True)
    out = handover(deals, USERS, load(), as_of_date=AS_OF)
    assert out[
        ["departing_owner_id", "opportunity_id", "action", "priority", "suggested_owner_id"]
    ].values.tolist() == [
        # U8 is inactive with an open deal: leaving too
        ["U8", "H4", "later_call", 1, "U1"],  # U1 100 -> 105
        ["U9", "H2", "visit", 1, "U1"],  # U1 105 -> 180 (U2 200, U3 600)
        ["U9", "H3", "phone", 2, "U1"],  # U1 180 -> 230
        ["U9", "H1", "later_call", 3, "U2"],  # U2 200 < U1 230
    ]
