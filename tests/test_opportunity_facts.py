"""Derived columns of fct_opportunity, boundaries included (hand-made deals)."""

from __future__ import annotations

import pandas as pd

from loudou.canonical import TABLES, coerce
from tests.fixtures import STAGES, WON, A, B, C, D, field_changes, history, opportunities
from transforms.build import as_of_view, current_facts
from transforms.intervals import stage_entries, stage_intervals
from transforms.opportunities import StallRules, opportunity_facts, stage_limits

AS_OF = pd.Timestamp("2026-03-31")
# the reporting day 2026-03-31 in Asia/Shanghai (UTC+8) ends at 2026-03-31 16:00 UTC
DAY_END = pd.Timestamp("2026-03-31 16:00")
FAR = {"expected_close_date": "2026-06-30"}


def facts(
    opps: pd.DataFrame,
    hist: pd.DataFrame,
    changes: pd.DataFrame | None = None,
    activity_times: dict[str, str] | None = None,
    rules: StallRules | None = None,
) -> pd.DataFrame:
    activity_times = activity_times or {}
    activities = coerce(
        TABLES["activities"],
        pd.DataFrame(
            {
                "activity_id": [f"X{i}" for i in range(len(activity_times))],
                "opportunity_id": list(activity_times),
                "occurred_at": list(activity_times.values()),
                "type": "call",
            }
        ),
        "UTC",
    )
    users = coerce(
        TABLES["users"],
        pd.DataFrame({"user_id": ["U1"], "team_id": ["T1"], "territory_id": ["R1"]}),
        "UTC",
    )
    accounts = coerce(
        TABLES["accounts"], pd.DataFrame({"account_id": ["A1"], "territory_id": ["R2"]}), "UTC"
    )
    entries = stage_entries(opps, hist)
    intervals = stage_intervals(opps, entries, STAGES)
    changes = changes if changes is not None else field_changes()
    return opportunity_facts(
        opps,
        entries,
        stage_limits(STAGES, intervals, StallRules().default_limit_quantile),
        changes,
        activities,
        users,
        accounts,
        STAGES,
        as_of_date=AS_OF,
        as_of_end=DAY_END,
        timezone="Asia/Shanghai",
        rules=rules or StallRules(),
    ).set_index("opportunity_id")


def test_days_in_stage_count_days_in_the_reporting_time_zone():
    opps = opportunities(
        {
            "opportunity_id": "late",
            "stage": A,
            "created_at": "2026-03-30 17:00",
            **FAR,
        },  # 03-31 01:00 local
        {
            "opportunity_id": "early",
            "stage": A,
            "created_at": "2026-03-30 15:00",
            **FAR,
        },  # 03-30 23:00 local
    )
    out = facts(
        opps, history(), activity_times={"late": "2026-03-31 01:00", "early": "2026-03-31 01:00"}
    )
    assert out.loc["late", "days_in_stage"] == 0
    assert out.loc["early", "days_in_stage"] == 1
    assert out.loc["late", "team_id"] == "T1" and out.loc["late", "territory_id"] == "R1"


def test_over_the_stage_limit_only_when_strictly_longer():
    # 待沟通's limit is 30 days: entered 30 local days before the as-of date is not yet over it
    opps = opportunities(
        {"opportunity_id": "at_limit", "stage": A, "created_at": "2026-03-01 02:00", **FAR},
        {"opportunity_id": "over", "stage": A, "created_at": "2026-02-28 02:00", **FAR},
    )
    out = facts(opps, history(), activity_times={"at_limit": "2026-03-30", "over": "2026-03-30"})
    assert out.loc["at_limit", "days_in_stage"] == 30
    assert pd.isna(out.loc["at_limit", "stall_reasons"]) and not out.loc["at_limit", "is_stalled"]
    assert out.loc["over", "days_in_stage"] == 31
    assert out.loc["over", "stall_reasons"] == "over_stage_limit"


def test_no_activity_counts_from_the_last_activity_or_from_creation():
    opps = opportunities(
        {"opportunity_id": "boundary", "stage": B, "created_at": "2026-03-01", **FAR},
        {"opportunity_id": "quiet", "stage": B, "created_at": "2026-03-01", **FAR},
        {"opportunity_id": "never", "stage": B, "created_at": "2026-03-09 00:00", **FAR},
    )
    hist = history(
        ("boundary", "2026-03-20", B, A),
        ("quiet", "2026-03-20", B, A),
        ("never", "2026-03-20", B, A),
    )
    # 21 local days before 03-31 is 03-10: on the boundary is fine, a day earlier is not
    out = facts(
        opps, hist, activity_times={"boundary": "2026-03-10 00:00", "quiet": "2026-03-09 00:00"}
    )
    assert out.loc["boundary", "days_since_activity"] == 21
    assert pd.isna(out.loc["boundary", "stall_reasons"])
    assert out.loc["quiet", "stall_reasons"] == "no_activity"
    assert out.loc["never", "days_since_activity"] == 22  # created 03-09 08:00 local
    assert out.loc["never", "stall_reasons"] == "no_activity"


def test_third_push_of_the_close_date_and_a_passed_close_date():
    opps = opportunities(
        {"opportunity_id": "two", "stage": C, "created_at": "2026-03-20", **FAR},
        {"opportunity_id": "three", "stage": C, "created_at": "2026-03-20", **FAR},
        {
            "opportunity_id": "past",
            "stage": C,
            "created_at": "2026-03-20",
            "expected_close_date": "2026-03-30",
        },
        {
            "opportunity_id": "today",
            "stage": C,
            "created_at": "2026-03-20",
            "expected_close_date": "2026-03-31",
        },
    )
    pushes = [
        ("two", "expected_close_date", f"2026-03-2{i}", f"2026-04-0{i}", f"2026-05-0{i}")
        for i in (1, 2)
    ]
    pushes.append(
        ("two", "expected_close_date", "2026-03-23", "2026-06-01", "2026-05-01")
    )  # pulled in
    pushes += [
        ("three", "expected_close_date", f"2026-03-2{i}", f"2026-04-0{i}", f"2026-05-0{i}")
        for i in (1, 2, 3)
    ]
    touched = dict.fromkeys(["two", "three", "past", "today"], "2026-03-30")
    out = facts(opps, history(), field_changes(*pushes), touched)
    assert out.loc["two", "close_date_push_count"] == 2
    assert pd.isna(out.loc["two", "stall_reasons"])
    assert out.loc["three", "close_date_push_count"] == 3
    assert out.loc["three", "stall_reasons"] == "pushed_repeatedly"
    assert out.loc["past", "stall_reasons"] == "past_close_date"
    assert pd.isna(out.loc["today", "stall_reasons"])


def test_pushes_are_unknown_where_the_crm_keeps_no_close_date_history():
    """Odoo tracks no date_deadline: three pushes there would be invisible, so the count is
    unknown (NULL), never a clean 0, and no deal is flagged for pushes."""
    opps = opportunities({"opportunity_id": "three", "stage": C, "created_at": "2026-03-20", **FAR})
    pushes = field_changes(
        *[
            ("three", "expected_close_date", f"2026-03-2{i}", f"2026-04-0{i}", f"2026-05-0{i}")
            for i in (1, 2, 3)
        ]
    )
    touched = {"three": "2026-03-30"}
    unrecorded = StallRules(close_date_changes_recorded=False)
    out = facts(opps, history(), field_changes(), touched, rules=unrecorded)
    assert pd.isna(out.loc["three", "close_date_push_count"])
    assert pd.isna(out.loc["three", "stall_reasons"])
    recorded = facts(opps, history(), pushes, touched)
    assert recorded.loc["three", "close_date_push_count"] == 3


def test_skipped_required_stages_and_closed_deals_are_never_stalled():
    opps = opportunities(
        {"opportunity_id": "skip", "stage": D, "created_at": "2026-03-01", **FAR},
        {"opportunity_id": "back_later", "stage": C, "created_at": "2026-03-01", **FAR},
        {
            "opportunity_id": "silent_win",
            "stage": WON,
            "status": "won",
            "created_at": "2026-01-01",
            "closed_at": "2026-01-02",
            "amount": 80.0,
            "expected_close_date": "2026-01-02",
        },
    )
    hist = history(
        ("skip", "2026-03-01", A, None),
        ("skip", "2026-03-05", B, A),
        ("skip", "2026-03-25", D, B),
        ("silent_win", "2026-01-02", WON, None),
        # C before B: B counts as skipped though the deal visits it afterwards
        ("back_later", "2026-03-01", A, None),
        ("back_later", "2026-03-02", C, A),
        ("back_later", "2026-03-03", B, C),
        ("back_later", "2026-03-04", C, B),
    )
    out = facts(opps, hist, activity_times={"skip": "2026-03-30"})
    assert out.loc["skip", "skipped_stages"] == C
    assert out.loc["back_later", "skipped_stages"] == B
    assert out.loc["silent_win", "skipped_stages"] == f"{B},{C}"
    assert not out.loc["silent_win", "is_stalled"]
    assert (out.loc["silent_win", "probability"], out.loc["silent_win", "weighted_amount"]) == (
        1.0,
        80.0,
    )
    assert out.loc["skip", "weighted_amount"] == 75.0


def _deals_now_and_at_day_end() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Four deals now, and as they were at the day's end (DAY_END): one unchanged, one
    raised after it, one won after it, one created after it."""
    now = opportunities(
        {"opportunity_id": "same", "stage": A, "created_at": "2026-03-01", **FAR},
        {"opportunity_id": "raised", "stage": A, "created_at": "2026-03-01", **FAR},
        {"opportunity_id": "won", "stage": WON, "created_at": "2026-03-01", **FAR},
        {"opportunity_id": "new", "stage": A, "created_at": "2026-03-31 18:00", **FAR},
    )
    now.loc[now.opportunity_id.eq("raised"), "amount"] = 900.0
    now.loc[now.opportunity_id.eq("won"), ["status", "closed_at"]] = [
        "won",
        pd.Timestamp("2026-03-31 20:00"),
    ]
    then = pd.DataFrame(
        {
            "opportunity_id": ["same", "raised", "won"],
            "stage": [A, A, B],
            "status": "open",
            "amount": 100.0,
            "expected_close_date": pd.Timestamp(FAR["expected_close_date"]),
            "owner_id": "U1",
        }
    )
    return now, then


def test_current_facts_make_again_only_the_deals_changed_since_the_day_end():
    now, then = _deals_now_and_at_day_end()
    view = as_of_view(now, then, DAY_END)
    made: list[list[str]] = []

    def facts_of(deals: pd.DataFrame) -> pd.DataFrame:
        made.append(sorted(deals.opportunity_id))
        return facts(deals, history()).reset_index()

    expected, view_facts = facts_of(now), facts_of(view)
    made.clear()
    out = current_facts(now, view, view_facts, facts_of)
    assert made == [["new", "raised", "won"]]  # 'same' is taken from the view's facts
    pd.testing.assert_frame_equal(out, expected)
    assert out.set_index("opportunity_id").loc["raised", "amount"] == 900.0


def test_current_facts_are_the_views_when_nothing_changed_after_the_day_end():
    now, _ = _deals_now_and_at_day_end()
    now = now[now.opportunity_id.eq("same")].reset_index(drop=True)
    view = as_of_view(now, now, DAY_END)
    view_facts = facts(view, history()).reset_index()
    assert current_facts(now, view, view_facts, lambda deals: 1 / 0) is view_facts
