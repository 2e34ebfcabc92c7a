"""mart_public_pool (公海) on hand-made accounts; every number below is counted by hand."""

from __future__ import annotations

import pandas as pd

from tests.fixtures import STAGES
from tests.warehouse_helpers import built_by_sql

AS_OF = pd.Timestamp("2026-03-31")
T = pd.Timestamp


def public_pool(accounts, activities, deals, timezone="UTC") -> pd.DataFrame:
    users = pd.DataFrame(
        {"user_id": ["U1", "U2"], "team_id": ["T1", "T2"], "territory_id": ["R1", "R2"]}
    )
    inputs = {
        "stg_users": users,
        "stg_accounts": pd.DataFrame(
            accounts, columns=["account_id", "name", "owner_id", "created_at"]
        ),
        "stg_activities": pd.DataFrame(
            activities,
            columns=["activity_id", "account_id", "opportunity_id", "owner_id", "occurred_at"],
        ),
        "day_opportunity": pd.DataFrame(
            deals,
            columns=[
                "opportunity_id",
                "account_id",
                "status",
                "amount",
                "weighted_amount",
                "stage_entered_at",
            ],
        ),
    }
    out = built_by_sql(
        "mart_public_pool", inputs, stages=STAGES, as_of=AS_OF.date(), timezone=timezone
    )
    return out.set_index("account_id").sort_index()


JAN = T("2026-01-01")
ACCOUNTS = [
    ("A1", "甲", "U1", JAN),  # worked last on 20 Feb: idle 39 days, one open deal resting
    ("A2", "乙", "U1", JAN),  # worked through its deal on 20 Mar: idle 11 days
    ("A3", "丙", "U2", JAN),  # only another rep worked it: its owner never did, 89 days
    ("A4", "丁", "U2", JAN),  # never worked, but its open deal moved on 15 Mar
    ("A5", "戊", "U1", T("2026-03-20")),  # new: known for 11 days only
    ("A6", "己", None, JAN),  # nobody's: nothing to return
    ("A7", "庚", "U1", JAN),  # worked on 1 Mar: idle exactly 30 days
]
ACTIVITIES = [
    ("X1", "A1", None, "U1", T("2026-02-20 10:00")),
    ("X2", "A1", None, "U1", T("2026-04-02 10:00")),  # after the as-of day: not yet known
    ("X3", None, "D2", "U1", T("2026-03-20 10:00")),  # on A2's deal, naming no account
    ("X4", "A3", None, "U1", T("2026-03-25 10:00")),  # not A3's owner
    ("X5", "A7", None, "U1", T("2026-03-01 09:00")),
]
DEALS = [
    ("D1", "A1", "open", 100.0, 25.0, T("2026-02-01")),
    ("D1W", "A1", "won", 500.0, 500.0, T("2026-01-15")),  # closed: not at stake
    ("D2", "A2", "open", 50.0, 10.0, T("2026-01-10")),
    ("D4", "A4", "open", 70.0, 7.0, T("2026-03-15")),
]


def test_the_accounts_their_owner_left_idle_for_the_configured_days_and_what_is_at_stake():
    out = public_pool(ACCOUNTS, ACTIVITIES, DEALS)
    assert list(out.index) == ["A1", "A3", "A7"]
    assert out.days_idle.tolist() == [39, 89, 30]
    assert out.loc["A1", ["open_deal_count", "open_amount", "open_weighted_amount"]].tolist() == [
        1,
        100.0,
        25.0,
    ]
    assert out.loc["A1", "last_activity_at"] == T("2026-02-20 10:00")
    assert pd.isna(out.loc["A3", "last_activity_at"]) and out.loc["A3", "open_deal_count"] == 0
    assert out.loc["A1", ["owner_id", "team_id", "territory_id"]].tolist() == ["U1", "T1", "R1"]
    assert out.loc["A3", "account_name"] == "丙"
    assert set(out.as_of_date) == {AS_OF}


def test_idle_days_are_counted_in_the_reporting_time_zone():
    # 1 March 16:30 UTC is 2 March in Shanghai: 29 days before 31 March there, not 30
    activities = [("X5", "A7", None, "U1", T("2026-03-01 16:30"))]
    accounts = [("A7", "庚", "U1", JAN)]
    assert public_pool(accounts, activities, [], timezone="UTC").days_idle.tolist() == [30]
    assert public_pool(accounts, activities, [], timezone="Asia/Shanghai").empty
