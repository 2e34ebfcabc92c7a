"""Stays in stages on hand-made deals: every duration below is counted by hand."""

from __future__ import annotations

import pandas as pd

from tests.fixtures import LOST, STAGES, WON, A, B, C, D, history, opportunities
from transforms.intervals import stage_entries, stage_intervals

OPPS = opportunities(
    # O1 moves back from C to B once, then is won
    {
        "opportunity_id": "O1",
        "stage": WON,
        "status": "won",
        "created_at": "2026-01-01 09:00",
        "closed_at": "2026-02-11 09:00",
    },
    # O2's history starts with its first change: it entered A at creation
    {"opportunity_id": "O2", "stage": B, "created_at": "2026-01-01 09:00"},
    # O3 has no history at all: in its current stage since creation
    {"opportunity_id": "O3", "stage": C, "created_at": "2026-01-05 00:00"},
    # O4 skips B and is lost from C
    {
        "opportunity_id": "O4",
        "stage": LOST,
        "status": "lost",
        "created_at": "2026-01-01 00:00",
        "closed_at": "2026-01-09 00:00",
    },
    # O5 is lost but the CRM never recorded a stage change for it (Odoo keeps the stage)
    {
        "opportunity_id": "O5",
        "stage": A,
        "status": "lost",
        "created_at": "2026-01-01 00:00",
        "closed_at": "2026-01-08 00:00",
    },
    # O6 has its stage recorded twice in a row
    {"opportunity_id": "O6", "stage": A, "created_at": "2026-01-01 00:00"},
)
HISTORY = history(
    ("O1", "2026-01-01 09:00", A, None),
    ("O1", "2026-01-05 09:00", B, A),
    ("O1", "2026-01-10 09:00", C, B),
    ("O1", "2026-01-12 09:00", B, C),
    ("O1", "2026-01-20 09:00", C, B),
    ("O1", "2026-02-01 09:00", D, C),
    ("O1", "2026-02-11 09:00", WON, D),
    ("O2", "2026-01-03 09:00", B, A),
    ("O4", "2026-01-01 00:00", A, None),
    ("O4", "2026-01-04 00:00", C, A),
    ("O4", "2026-01-09 00:00", LOST, C),
    ("O5", "2026-01-01 00:00", A, None),
    ("O6", "2026-01-01 00:00", A, None),
    ("O6", "2026-01-02 00:00", A, A),
)


def intervals() -> pd.DataFrame:
    return stage_intervals(OPPS, stage_entries(OPPS, HISTORY), STAGES)


def rows_of(opportunity_id: str) -> list[tuple]:
    frame = intervals()
    frame = frame[frame.opportunity_id == opportunity_id]
    return [
        (
            r.stage,
            r.duration_days if pd.notna(r.duration_days) else None,
            r.next_stage if pd.notna(r.next_stage) else None,
            r.exit_kind,
            r.visit_number,
        )
        for r in frame.itertuples()
    ]


def test_regression_is_two_visits_and_the_last_stay_ends_won():
    assert rows_of("O1") == [
        (A, 4.0, B, "advanced", 1),  # 01-01 09:00 -> 01-05 09:00
        (B, 5.0, C, "advanced", 1),  # -> 01-10
        (C, 2.0, B, "regressed", 1),  # -> 01-12, back to B
        (B, 8.0, C, "advanced", 2),  # -> 01-20
        (C, 12.0, D, "advanced", 2),  # -> 02-01
        (D, 10.0, WON, "won", 1),  # -> 02-11, won; the won stage is an outcome, not a stay
    ]


def test_first_stage_is_entered_at_creation():
    frame = intervals()
    first = frame[frame.opportunity_id == "O2"].iloc[0]
    assert (first.stage, first.entered_at, first.exited_at) == (
        A,
        pd.Timestamp("2026-01-01 09:00"),
        pd.Timestamp("2026-01-03 09:00"),
    )
    assert rows_of("O2") == [(A, 2.0, B, "advanced", 1), (B, None, None, "open", 1)]


def test_deal_without_history_is_in_its_stage_since_creation():
    frame = intervals()
    [row] = frame[frame.opportunity_id == "O3"].itertuples()
    assert (row.stage, row.entered_at, row.exit_kind) == (C, pd.Timestamp("2026-01-05"), "open")
    assert pd.isna(row.exited_at) and pd.isna(row.duration_days)


def test_skip_is_one_stay_straight_to_the_later_stage_then_lost():
    assert rows_of("O4") == [(A, 3.0, C, "advanced", 1), (C, 5.0, LOST, "lost", 1)]


def test_close_without_a_recorded_stage_change_ends_the_stay_at_closed_at():
    assert rows_of("O5") == [(A, 7.0, None, "lost", 1)]


def test_repeated_record_of_the_same_stage_is_one_stay():
    assert rows_of("O6") == [(A, None, None, "open", 1)]
