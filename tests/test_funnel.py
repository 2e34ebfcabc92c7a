"""Funnel and stage conversion on hand-made deals; every number below is counted by hand."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.fixtures import LOST, STAGES, WON, A, B, C, D, history, opportunities
from tests.warehouse_helpers import built_by_sql
from transforms.funnel import ConversionRules, stage_cohorts, stage_conversion
from transforms.intervals import stage_entries, stage_intervals

AS_OF = pd.Timestamp("2026-03-31")
DAY_END = pd.Timestamp("2026-04-01")
USERS = {"U1": ("T1", "R1"), "U2": ("T2", "R1")}

OPPS = opportunities(
    {
        "opportunity_id": "P1",
        "owner_id": "U1",
        "stage": WON,
        "status": "won",
        "amount": 100.0,
        "created_at": "2026-01-05",
        "closed_at": "2026-02-01",
        "lead_source": "展会",
    },
    {
        "opportunity_id": "P2",
        "owner_id": "U1",
        "stage": LOST,
        "status": "lost",
        "amount": 200.0,
        "created_at": "2026-01-06",
        "closed_at": "2026-01-25",
        "lead_source": "官网",
    },
    {
        "opportunity_id": "P3",
        "owner_id": "U1",
        "stage": B,
        "amount": 300.0,
        "created_at": "2026-01-07",
        "lead_source": "官网",
    },
    {
        "opportunity_id": "P4",
        "owner_id": "U2",
        "stage": LOST,
        "status": "lost",
        "amount": 400.0,
        "created_at": "2026-01-08",
        "closed_at": "2026-01-09",
        "lead_source": "官网",
    },
    # P5 was never recorded before C: it appears in the CRM at C
    {
        "opportunity_id": "P5",
        "owner_id": "U2",
        "stage": C,
        "amount": 500.0,
        "created_at": "2026-01-20",
        "lead_source": "官网",
    },
)
HISTORY = history(
    ("P1", "2026-01-05", A, None),
    ("P1", "2026-01-10", B, A),
    ("P1", "2026-01-20", C, B),
    ("P1", "2026-02-01", WON, C),
    ("P2", "2026-01-06", A, None),
    ("P2", "2026-01-12", C, A),
    ("P2", "2026-01-25", LOST, C),
    ("P3", "2026-01-07", A, None),
    ("P3", "2026-01-15", B, A),
    ("P4", "2026-01-08", A, None),
    ("P4", "2026-01-09", LOST, A),
)


def scoped(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(
        team_id=frame.owner_id.map(lambda u: USERS[u][0]),
        territory_id=frame.owner_id.map(lambda u: USERS[u][1]),
    )


def conversion(
    opps: pd.DataFrame = OPPS, hist: pd.DataFrame = HISTORY, stages: pd.DataFrame = STAGES, **rules
) -> pd.DataFrame:
    entries = stage_entries(opps, hist)
    intervals = stage_intervals(opps, entries, stages)
    cohorts = stage_cohorts(opps, entries, intervals, stages, day_end=DAY_END)
    accounts = pd.DataFrame({"account_id": ["A1"], "industry": ["制造"]})
    return stage_conversion(
        cohorts,
        scoped(opps),
        accounts,
        stages,
        as_of_date=AS_OF,
        timezone="UTC",
        rules=ConversionRules(**rules),
    )


def row(
    frame: pd.DataFrame,
    funnel_kind: str,
    stage: str,
    period: str = "2026-01-01",
    scope: tuple[str, str] = ("company", "all"),
    dimension: tuple[str, str] = ("all", "all"),
    period_kind: str = "month",
) -> pd.Series:
    hit = frame[
        (frame.funnel == funnel_kind)
        & (frame.stage == stage)
        & (frame.period_kind == period_kind)
        & (frame.period_start == pd.Timestamp(period))
        & (frame.scope_kind == scope[0])
        & (frame.scope_id == scope[1])
        & (frame.dimension == dimension[0])
        & (frame.dimension_value == dimension[1])
    ]
    assert len(hit) == 1, hit
    return hit.iloc[0]


def counts(r: pd.Series) -> tuple:
    return (r.entered, r.advanced, r.won, r.lost, r.still_open, r.conversion_rate)


def test_strict_funnel_counts_deals_only_where_recorded():
    out = conversion()
    # A: P1-P4 entered; P1 (won), P2 (to C), P3 (to B) advanced; P4 lost at A
    assert counts(row(out, "strict", A)) == (4, 3, 1, 1, 0, 0.75)
    # B: P1 advanced, P3 still there; P2 skipped B and is not counted
    assert counts(row(out, "strict", B)) == (2, 1, 1, 0, 1, 1.0)
    # C: P1 advanced (won), P2 lost at C, P5 still open
    assert counts(row(out, "strict", C)) == (3, 1, 1, 1, 1, 0.5)
    assert out[(out.funnel == "strict") & (out.stage == D)].empty  # nobody recorded at D


def test_any_stage_funnel_counts_deals_that_passed_a_stage_unrecorded():
    out = conversion()
    # A: P5 reached C, so it passed A too: 4 of 5 advanced
    assert counts(row(out, "any_stage", A)) == (5, 4, 1, 1, 0, 0.8)
    # B: P2 (at C) and P5 (at C) passed B
    assert counts(row(out, "any_stage", B)) == (4, 3, 1, 0, 1, 1.0)
    assert counts(row(out, "any_stage", C)) == (3, 1, 1, 1, 1, 0.5)
    # D: P1 passed D when it was won, on 02-01: February's cohort
    assert counts(row(out, "any_stage", D, period="2026-02-01")) == (1, 1, 1, 0, 0, 1.0)


def test_amounts_and_days_in_stage():
    a = row(conversion(), "strict", A)
    assert (a.amount_entered, a.amount_advanced, a.amount_lost) == (1000, 600, 400)
    assert a.amount_conversion_rate == 0.6
    # stays at A: P4 1 day, P1 5, P2 6, P3 8
    assert a.median_days == 5.5
    assert a.p75_days == pytest.approx(6.5)  # linear between 6 and 8 at 0.25
    assert a.p90_days == pytest.approx(7.4)


def test_scopes_and_cuts():
    out = conversion()
    # team T1 owns P1-P3: all advanced from A
    assert counts(row(out, "strict", A, scope=("team", "T1"))) == (3, 3, 1, 0, 0, 1.0)
    assert counts(row(out, "strict", A, scope=("user", "U2"))) == (1, 0, 0, 1, 0, 0.0)
    assert counts(row(out, "strict", A, dimension=("lead_source", "官网"))) == (
        3,
        2,
        0,
        1,
        0,
        pytest.approx(2 / 3),
    )
    assert counts(row(out, "strict", A, scope=("team", "T1"), dimension=("industry", "制造"))) == (
        3,
        3,
        1,
        0,
        0,
        1.0,
    )
    # weeks: P1 (01-05) is in the week of Monday 01-05; P2, P3, P4 too
    weekly = conversion(weeks=20)
    assert row(weekly, "strict", A, period="2026-01-05", period_kind="week").entered == 4


def _many_deals(week_outcomes: dict[str, tuple[int, int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per week start: (advanced, lost) deals that entered A on that Monday."""
    opps, hist = [], []
    for week, (advanced, lost) in week_outcomes.items():
        start = pd.Timestamp(week)
        for i in range(advanced + lost):
            opp = f"{week}-{i}"
            fate = B if i < advanced else LOST
            opps.append(
                {
                    "opportunity_id": opp,
                    "owner_id": "U1",
                    "created_at": start,
                    "stage": fate,
                    "status": "open" if fate == B else "lost",
                    "closed_at": None if fate == B else start + pd.Timedelta(days=2),
                }
            )
            hist += [(opp, start, A, None), (opp, start + pd.Timedelta(days=2), fate, A)]
    return opportunities(*opps), history(*hist)


def test_bottleneck_needs_significance_not_just_a_low_rate():
    stages = STAGES.assign(benchmark_rate=STAGES.stage.map({A: 0.8}))
    # 3 of 4 against a benchmark of 0.8: P(X <= 3 | 4, 0.8) = 0.59, no alarm
    small = row(conversion(stages=stages), "strict", A)
    assert small.benchmark_rate == 0.8 and not small.is_bottleneck
    assert small.p_value == pytest.approx(1 - 0.8**4)
    # 20 of 40: P(X <= 20 | 40, 0.8) is about 3e-5: a bottleneck
    opps, hist = _many_deals({"2026-03-02": (20, 20)})
    big = row(conversion(opps, hist, stages), "strict", A, period="2026-03-01")
    assert big.conversion_rate == 0.5 and big.is_bottleneck and big.p_value < 1e-4


def test_without_a_configured_benchmark_a_stage_is_compared_with_its_trailing_periods():
    opps, hist = _many_deals({"2026-02-02": (18, 2), "2026-02-09": (18, 2), "2026-02-16": (9, 11)})
    out = conversion(opps, hist)
    week3 = row(out, "strict", A, period="2026-02-16", period_kind="week")
    # trailing weeks pooled: 36 of 40 advanced = 0.9; this week 9 of 20
    assert week3.benchmark_rate == pytest.approx(0.9)
    assert week3.is_bottleneck
    # and a drop of 0.45 from the week before is an anomaly
    assert week3.change_vs_previous == pytest.approx(-0.45) and week3.is_anomaly
    assert not row(out, "strict", A, period="2026-02-09", period_kind="week").is_anomaly


def funnel(inputs: dict[str, pd.DataFrame], users: dict = USERS) -> pd.DataFrame:
    """mart_funnel as the warehouse builds it from `inputs` (the snapshot, or the state it is
    made from) and the users."""
    stg_users = pd.DataFrame(
        [{"user_id": u, "team_id": t, "territory_id": r} for u, (t, r) in users.items()]
    )
    inputs = inputs | {"stg_users": stg_users}
    return built_by_sql("mart_funnel", inputs, stages=STAGES, as_of=AS_OF.date())


def test_funnel_of_open_deals_by_stage_and_scope():
    state = {"stg_opportunities": OPPS, "stg_stage_history": HISTORY}
    out = funnel(state).sort_values("stage_order")
    company = out[out.scope_kind == "company"].set_index("stage")
    assert list(company.index) == [A, B, C, D]
    assert company.loc[B, ["open_count", "open_amount", "weighted_amount"]].tolist() == [1, 300, 75]
    assert company.loc[C, ["open_count", "open_amount", "weighted_amount"]].tolist() == [
        1,
        500,
        250,
    ]
    assert company.loc[A, "open_count"] == 0 and company.loc[D, "open_amount"] == 0
    u2 = out[(out.scope_kind == "user") & (out.scope_id == "U2")].set_index("stage")
    assert u2.open_count.tolist() == [0, 0, 1, 0]


def test_the_funnel_counts_the_days_open_deals_by_the_scopes_their_owner_has():
    def deal(deal_id, owner, stage, amount, status="open", day=AS_OF):
        weighted = None if amount is None else amount / 10
        return {
            "as_of_date": day,
            "opportunity_id": deal_id,
            "owner_id": owner,
            "pipeline": "default",
            "stage": stage,
            "status": status,
            "amount": amount,
            "weighted_amount": weighted,
        }

    snapshot = pd.DataFrame(
        [
            deal("O1", "U1", A, 100.0),
            deal("O2", "U9", A, 200.0),  # an owner the users table does not know
            deal("O3", None, B, None),  # no owner and no amount
            deal("O4", "U1", WON, 400.0, status="won"),  # closed that day: not open
            deal("O5", "U1", A, 1000.0, day=AS_OF - pd.Timedelta(days=1)),  # another day
        ]
    )
    out = funnel({"fct_pipeline_snapshot": snapshot}).set_index(["scope_kind", "scope_id", "stage"])
    # every open stage of each scope that has an open deal: the company, T1, R1, U1, U9
    assert len(out) == 5 * 4
    measures = ["open_count", "open_amount", "weighted_amount"]
    assert out.loc[("company", "all", A), measures].tolist() == [2, 300, 30]
    assert out.loc[("company", "all", B), measures].tolist() == [1, 0, 0]  # no amount: 0
    assert out.loc[("team", "T1", A), measures].tolist() == [1, 100, 10]
    assert out.loc[("territory", "R1", B), measures].tolist() == [0, 0, 0]
    assert out.loc[("user", "U9", A), measures].tolist() == [1, 200, 20]
    assert out.loc[("user", "U1", C), measures].tolist() == [0, 0, 0]
    assert set(out.as_of_date) == {AS_OF}


def test_a_reopened_deal_counts_once_and_is_still_open():
    reopened = opportunities(
        {
            "opportunity_id": "R1",
            "owner_id": "U1",
            "stage": A,
            "amount": 50.0,
            "created_at": "2026-01-05",
        }
    )
    hist = history(
        ("R1", "2026-01-05", A, None), ("R1", "2026-01-08", LOST, A), ("R1", "2026-01-15", A, LOST)
    )
    out = conversion(
        pd.concat([OPPS, reopened], ignore_index=True),
        pd.concat([HISTORY, hist], ignore_index=True),
    )
    # A: P1-P4 as before, plus R1 entered once (on 01-05) and open again, so neither
    # advanced nor lost
    assert counts(row(out, "strict", A)) == (5, 3, 1, 1, 1, 0.75)
    assert counts(row(out, "any_stage", A)) == (6, 4, 1, 1, 1, 0.8)
