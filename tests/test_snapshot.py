"""The pipeline as it stood on a past day, rebuilt from history (hand-made deals), as the
warehouse builds it (sql/facts/fct_pipeline_snapshot.sql)."""

from __future__ import annotations

import pandas as pd

from tests.fixtures import STAGES, A, B, C, field_changes
from tests.test_intervals import HISTORY, OPPS
from tests.warehouse_helpers import built_by_sql

CHANGES = field_changes(
    ("O1", "amount", "2026-01-15 00:00", "100", "150"),
    ("O1", "expected_close_date", "2026-01-15 00:00", "2026-01-31", "2026-02-15"),
    ("O1", "status", "2026-02-11 09:00", "open", "won"),
    ("O2", "owner_id", "2026-01-04 00:00", "U9", "U1"),
)


def snapshot(
    day: str, opportunities: pd.DataFrame = OPPS, changes: pd.DataFrame = CHANGES
) -> pd.DataFrame:
    inputs = {
        "stg_opportunities": opportunities.assign(amount=[150.0, 100, 100, 100, 100, 100]),
        "stg_stage_history": HISTORY,
        "stg_field_history": changes,
    }
    frame = built_by_sql(
        "fct_pipeline_snapshot", inputs, stages=STAGES, as_of=pd.Timestamp(day).date()
    )
    frame["expected_close_date"] = pd.to_datetime(frame.expected_close_date)
    return frame.set_index("opportunity_id")


def test_stage_amount_and_close_date_as_they_were():
    o1 = snapshot("2026-01-11").loc["O1"]
    # on 01-11 O1 sat in C (entered 01-10, moved back 01-12) at its old amount and close date
    assert (o1.stage, o1.status, o1.amount, o1.probability) == (C, "open", 100.0, 0.5)
    assert o1.expected_close_date == pd.Timestamp("2026-01-31")
    assert o1.weighted_amount == 50.0
    later = snapshot("2026-01-16").loc["O1"]
    assert (later.stage, later.amount) == (B, 150.0)  # regressed on 01-12, amount raised 01-15


def test_owner_before_a_reassignment():
    assert snapshot("2026-01-03").loc["O2"].owner_id == "U9"
    assert snapshot("2026-01-04").loc["O2"].owner_id == "U1"
    assert snapshot("2026-01-02").loc["O2"].stage == A


def test_deals_not_yet_created_are_absent_and_closed_deals_appear_on_their_closing_day_only():
    assert "O3" not in snapshot("2026-01-04").index  # created 01-05
    assert "O3" in snapshot("2026-01-05").index
    assert snapshot("2026-01-07").loc["O5"].status == "open"
    closing_day = snapshot("2026-01-08").loc["O5"]
    assert (closing_day.status, closing_day.probability) == ("lost", 0.0)
    assert "O5" not in snapshot("2026-01-09").index
    won_day = snapshot("2026-02-11").loc["O1"]
    assert (won_day.status, won_day.probability, won_day.weighted_amount) == ("won", 1.0, 150.0)
    assert "O1" not in snapshot("2026-02-12").index


def test_a_deleted_deal_is_absent_and_history_text_that_is_no_value_leaves_it_unknown():
    deleted = OPPS.assign(is_deleted=OPPS.opportunity_id.eq("O3"))
    assert "O3" not in snapshot("2026-01-06", deleted).index
    garbled = field_changes(
        ("O2", "amount", "2026-01-04 00:00", "80", "about 90"),
        ("O2", "expected_close_date", "2026-01-04 00:00", "2026-01-31", "next month"),
        ("O6", "amount", "2026-01-04 00:00", "100", " 1.5e2 "),
        ("O6", "expected_close_date", "2026-01-04 00:00", "", "2026-03-01 00:00:00"),
    )
    o2, o6 = (snapshot("2026-01-05", changes=garbled).loc[o] for o in ("O2", "O6"))
    assert pd.isna(o2.amount) and pd.isna(o2.expected_close_date) and pd.isna(o2.weighted_amount)
    assert o6.amount == 150.0 and o6.expected_close_date == pd.Timestamp("2026-03-01")
    # before the change, the old value: a number, or none where the CRM wrote an empty text
    o2, o6 = (snapshot("2026-01-03", changes=garbled).loc[o] for o in ("O2", "O6"))
    assert o2.amount == 80.0 and o2.expected_close_date == pd.Timestamp("2026-01-31")
    assert pd.isna(o6.expected_close_date)
