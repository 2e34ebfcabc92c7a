"""The weekly pipeline bridge on a hand-made week, as the warehouse builds it
(sql/marts/mart_pipeline_movement.sql): every bucket counted by hand."""

from __future__ import annotations

import pandas as pd

from loudou.canonical import TABLES, coerce
from tests.fixtures import LOST, STAGES, WON, A, B, C, field_changes, history, opportunities
from tests.warehouse_helpers import built_by_sql
from transforms.movement import FLOW_BUCKETS

USERS = coerce(
    TABLES["users"],
    pd.DataFrame({"user_id": ["U1", "U2"], "team_id": ["T1", "T2"], "territory_id": ["R1", "R1"]}),
    "UTC",
)
START, END = pd.Timestamp("2026-03-16"), pd.Timestamp("2026-03-23")
FAR = {"expected_close_date": "2026-06-01"}
OPPS = opportunities(
    {
        "opportunity_id": "M1",
        "owner_id": "U1",
        "stage": C,
        "amount": 150.0,
        "created_at": "2026-03-10",
        **FAR,
    },
    {
        "opportunity_id": "M2",
        "owner_id": "U1",
        "stage": WON,
        "status": "won",
        "amount": 200.0,
        "created_at": "2026-03-01",
        "closed_at": "2026-03-18",
        **FAR,
    },
    {
        "opportunity_id": "M3",
        "owner_id": "U2",
        "stage": A,
        "amount": 300.0,
        "created_at": "2026-03-17",
        **FAR,
    },
    {
        "opportunity_id": "M4",
        "owner_id": "U2",
        "stage": A,
        "amount": 400.0,
        "created_at": "2026-03-01",
        **FAR,
    },
    {
        "opportunity_id": "M5",
        "owner_id": "U2",
        "stage": C,
        "amount": 450.0,
        "created_at": "2026-03-01",
        "expected_close_date": "2026-05-01",
    },
    {
        "opportunity_id": "M6",
        "owner_id": "U1",
        "stage": LOST,
        "status": "lost",
        "amount": 60.0,
        "created_at": "2026-03-17",
        "closed_at": "2026-03-19",
        **FAR,
    },
    {
        "opportunity_id": "M7",
        "owner_id": "U2",
        "stage": A,
        "amount": 70.0,
        "created_at": "2026-02-01",
        **FAR,
    },
)
HISTORY = history(
    ("M1", "2026-03-10", B, None),
    ("M1", "2026-03-17", C, B),
    ("M2", "2026-03-01", A, None),
    ("M2", "2026-03-18", WON, A),
    ("M5", "2026-03-01", C, None),
    ("M6", "2026-03-17", A, None),
    ("M6", "2026-03-19", LOST, A),
    ("M7", "2026-02-01", A, None),
    ("M7", "2026-03-01", LOST, A),
    ("M7", "2026-03-19", A, LOST),
)
CHANGES = field_changes(
    ("M1", "amount", "2026-03-17", "100", "150"),
    ("M4", "owner_id", "2026-03-18", "U1", "U2"),
    ("M5", "expected_close_date", "2026-03-18", "2026-04-01", "2026-05-01"),
    ("M5", "amount", "2026-03-18", "500", "450"),
    ("M7", "status", "2026-03-01", "open", "lost"),
    ("M7", "status", "2026-03-19", "lost", "open"),
)


def movement(as_of: str, weeks: int) -> pd.DataFrame:
    inputs = {
        "stg_opportunities": OPPS,
        "stg_stage_history": HISTORY,
        "stg_field_history": CHANGES,
        "stg_users": USERS,
    }
    day = pd.Timestamp(as_of).date()
    out = built_by_sql(
        "mart_pipeline_movement", inputs, stages=STAGES, as_of=day, movement_weeks=weeks
    )
    return out.astype({"week_start": "datetime64[us]", "week_end": "datetime64[us]"})


def bridge(scope_kind: str, scope_id: str) -> dict[str, tuple[int, float]]:
    """The week of START to END, built on its last day (a Sunday)."""
    out = movement("2026-03-22", weeks=1)
    assert (out.week_start.unique().tolist(), out.week_end.unique().tolist()) == ([START], [END])
    out = out[(out.scope_kind == scope_kind) & (out.scope_id == scope_id)]
    return {r.bucket: (r.deal_count, r.amount) for r in out.itertuples() if r.deal_count}


def test_company_bridge():
    assert bridge("company", "all") == {
        "start": (4, 1200.0),  # M1 100, M2 200, M4 400, M5 500
        "created": (2, 360.0),  # M3 300, M6 60 (created and lost in the week)
        "reopened": (1, 70.0),  # M7 was lost before the week
        "amount_up": (1, 50.0),  # M1 100 -> 150
        "amount_down": (1, 50.0),  # M5 500 -> 450
        "won": (1, 200.0),  # M2
        "lost": (1, 60.0),  # M6
        "end": (5, 1370.0),  # M1 150, M3 300, M4 400, M5 450, M7 70
        "advanced": (1, 150.0),  # M1 B -> C
        "pushed_out": (1, 450.0),  # M5's close date 04-01 -> 05-01
        "unchanged": (1, 400.0),  # M4 changed owner, nothing else
    }


def test_a_reassigned_deal_moves_between_teams_and_both_bridges_balance():
    t1 = bridge("team", "T1")
    assert t1 == {
        "start": (3, 700.0),
        "created": (1, 60.0),
        "amount_up": (1, 50.0),
        "won": (1, 200.0),
        "lost": (1, 60.0),
        "moved_out": (1, 400.0),
        "end": (1, 150.0),
        "advanced": (1, 150.0),
    }
    t2 = bridge("team", "T2")
    assert t2 == {
        "start": (1, 500.0),
        "created": (1, 300.0),
        "reopened": (1, 70.0),
        "moved_in": (1, 400.0),
        "amount_down": (1, 50.0),
        "end": (4, 1220.0),
        "pushed_out": (1, 450.0),
    }
    for buckets in (t1, t2, bridge("company", "all"), bridge("user", "U1")):
        signed = {"amount_down": -1, "won": -1, "lost": -1, "moved_out": -1, "removed": -1}
        total = sum(
            signed.get(b, 1) * amount
            for b, (_, amount) in buckets.items()
            if b in FLOW_BUCKETS and b != "end"
        )
        assert total == buckets.get("end", (0, 0.0))[1]


def test_a_days_weeks_are_the_finished_one_and_the_running_one_to_the_days_end():
    out = movement("2026-03-25", weeks=2)  # a Wednesday
    weeks = out[["week_start", "week_end"]].drop_duplicates().sort_values("week_start")
    assert weeks.to_numpy().tolist() == [[START, END], [END, pd.Timestamp("2026-03-26")]]
    finished = out[out.week_start.eq(START) & out.scope_kind.eq("company")]
    finished = {r.bucket: (r.deal_count, r.amount) for r in finished.itertuples() if r.deal_count}
    assert finished == bridge("company", "all")  # the week's own bridge, whichever day built it
    # every scope with a deal in any bucket has all sixteen, zero where nothing moved
    assert (out.groupby(["week_start", "scope_kind", "scope_id"]).size() == 16).all()
