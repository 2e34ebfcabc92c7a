"""Sales metrics and win/loss on the hand-made deals of test_funnel (counted by hand)."""

from __future__ import annotations

import pandas as pd
import pytest

from loudou.canonical import TABLES, coerce
from tests.fixtures import STAGES, C
from tests.test_funnel import AS_OF, DAY_END, HISTORY, OPPS, scoped
from tests.warehouse_helpers import built_by_sql
from transforms.funnel import ConversionRules, stage_cohorts
from transforms.intervals import stage_entries, stage_intervals

USERS = coerce(
    TABLES["users"],
    pd.DataFrame({"user_id": ["U1", "U2"], "team_id": ["T1", "T2"], "territory_id": ["R1", "R1"]}),
    "UTC",
)
LEADS = coerce(
    TABLES["leads"],
    pd.DataFrame(
        {
            "lead_id": ["L1", "L2", "L3", "L4"],
            "owner_id": ["U1", "U1", "U2", "U2"],
            "status": ["converted", "converted", "disqualified", "open"],
            "created_at": ["2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"],
            "converted_at": ["2026-01-05", "2026-01-07", None, None],
            "opportunity_id": ["P1", "P3", None, None],
        }
    ),
    "UTC",
)
PERIODS = {"week": 20, "month": 6, "quarter": 2}


RULES = ConversionRules(**{f"{kind}s": n for kind, n in PERIODS.items()})


def sales_metrics(facts: pd.DataFrame, qualified: pd.Index, leads=LEADS) -> pd.DataFrame:
    """mart_sales_metrics as the warehouse builds it from the day's facts."""
    inputs = {
        "day_opportunity": facts,
        "day_qualified_deal": pd.DataFrame({"opportunity_id": qualified}),
        "stg_leads": leads,
        "stg_users": USERS,
    }
    return built_by_sql(
        "mart_sales_metrics", inputs, stages=STAGES, as_of=AS_OF.date(), conversion=RULES
    )


def metrics() -> pd.DataFrame:
    entries = stage_entries(OPPS, HISTORY)
    intervals = stage_intervals(OPPS, entries, STAGES)
    cohorts = stage_cohorts(OPPS, entries, intervals, STAGES, day_end=DAY_END)
    qualified = pd.Index(
        cohorts[(cohorts.funnel == "any_stage") & (cohorts.stage == C)].opportunity_id
    )
    return sales_metrics(scoped(OPPS), qualified)


def value(
    frame: pd.DataFrame, metric: str, period: str, scope=("company", "all"), kind: str = "month"
) -> float:
    hit = frame[
        (frame.metric == metric)
        & (frame.period_start == pd.Timestamp(period))
        & (frame.period_kind == kind)
        & (frame.scope_kind == scope[0])
        & (frame.scope_id == scope[1])
    ]
    assert len(hit) == 1, (metric, period, scope, hit)
    return hit.value.iat[0]


def test_lead_and_qualification_rates():
    out = metrics()
    # four January leads: L1 -> P1 and L2 -> P3 converted; only P1 reached 明确需求
    assert value(out, "lead_to_opportunity_rate", "2026-01-01") == 0.5
    assert value(out, "lead_to_qualified_rate", "2026-01-01") == 0.25
    # five January deals: P1, P2 (skipped to C) and P5 (seen at C) reached 明确需求
    assert value(out, "opportunity_to_qualified_rate", "2026-01-01") == 0.6
    assert value(out, "lead_to_opportunity_rate", "2026-01-01", ("team", "T1")) == 1.0


def test_win_rates_cycle_and_won_size_by_closing_period():
    out = metrics()
    # January closed P2 (qualified) and P4 (not): nothing won
    assert value(out, "win_rate", "2026-01-01") == 0.0
    assert value(out, "qualified_win_rate", "2026-01-01") == 0.0
    # February: P1 won, 27 days after its creation, for 100
    assert value(out, "win_rate", "2026-02-01") == 1.0
    assert value(out, "qualified_per_win", "2026-02-01") == 1.0
    assert value(out, "sales_cycle_days", "2026-02-01") == 27.0
    assert value(out, "avg_won_amount", "2026-02-01") == 100.0
    assert value(out, "win_rate", "2026-01-01", kind="quarter") == pytest.approx(1 / 3)


def win_loss(
    facts: pd.DataFrame,
    intervals: pd.DataFrame,
    accounts: pd.DataFrame,
    as_of: pd.Timestamp = AS_OF,
    timezone: str = "UTC",
) -> pd.DataFrame:
    """mart_win_loss as the warehouse builds it from the day's facts."""
    inputs = {"day_opportunity": facts, "fct_stage_interval": intervals, "stg_accounts": accounts}
    return built_by_sql(
        "mart_win_loss",
        inputs,
        stages=STAGES,
        as_of=as_of.date(),
        timezone=timezone,
        conversion=RULES,
    )


def test_the_sales_cycle_is_the_median_and_a_deal_without_amount_is_left_out_of_the_mean():
    def deal(deal_id: str, status: str, closed: str, amount: float | None) -> dict:
        return {
            "opportunity_id": deal_id,
            "owner_id": "U1",
            "team_id": "T1",
            "territory_id": "R1",
            "status": status,
            "created_at": pd.Timestamp("2026-03-01"),
            "closed_at": pd.Timestamp(closed),
            "amount": amount,
        }

    facts = pd.DataFrame(
        [
            deal("W1", "won", "2026-03-11", 100.0),  # 10 days
            deal("W2", "won", "2026-03-21", None),  # 20 days, no amount
            deal("L1", "lost", "2026-03-05", 50.0),
        ]
    )
    out = sales_metrics(facts, pd.Index(["W1", "L1"]), leads=LEADS.iloc[:0])
    march = "2026-03-01"
    assert value(out, "sales_cycle_days", march) == 15.0  # the median of 10 and 20
    assert value(out, "avg_won_amount", march) == 100.0
    assert value(out, "win_rate", march) == pytest.approx(2 / 3)
    assert value(out, "qualified_win_rate", march) == 0.5  # W1 won, L1 lost
    assert value(out, "qualified_per_win", march, ("user", "U1")) == 2.0
    assert value(out, "win_rate", "2026-03-16", kind="week") == 1.0  # W2 alone, on Saturday
    assert not out.metric.str.startswith("lead_").any()  # no leads: no lead rates


def test_win_loss_by_lead_source_and_where_lost_deals_left():
    entries = stage_entries(OPPS, HISTORY)
    intervals = stage_intervals(OPPS, entries, STAGES)
    accounts = pd.DataFrame({"account_id": ["A1"], "industry": ["制造"]})
    out = win_loss(scoped(OPPS), intervals, accounts)
    quarter = out[(out.period_kind == "quarter") & (out.scope_kind == "company")]
    by_source = quarter[quarter.dimension == "lead_source"].set_index("dimension_value")
    assert by_source.loc["展会", ["won", "lost", "win_rate"]].tolist() == [1, 0, 1.0]
    assert by_source.loc["官网", ["won", "lost", "win_rate"]].tolist() == [0, 2, 0.0]
    left = quarter[quarter.dimension == "lost_at_stage"].set_index("dimension_value")
    assert left.lost.to_dict() == {"待沟通": 1, "明确需求": 1}
    assert left.lost_amount.to_dict() == {"待沟通": 400.0, "明确需求": 200.0}


def test_win_loss_counts_a_deal_in_the_month_it_closed_in_the_reporting_time_zone():
    def closed(deal_id: str, status: str, at: str, amount: float) -> dict:
        return {
            "opportunity_id": deal_id,
            "team_id": "T1",
            "status": status,
            "closed_at": pd.Timestamp(at),
            "amount": amount,
            "lead_source": "官网",
        }

    facts = pd.DataFrame(
        [
            closed("W1", "won", "2026-02-28 17:00", 10.0),  # 1 March, 01:00 in Shanghai
            closed("W2", "won", "2026-02-28 15:00", 20.0),  # 28 February, 23:00
            closed("L1", "lost", "2026-03-31 15:59", 40.0),  # the as-of day's last minute
            closed("L2", "lost", "2026-03-31 16:30", 80.0),  # 1 April: after the as-of day
        ]
    )
    out = win_loss(facts, pd.DataFrame(), pd.DataFrame(), timezone="Asia/Shanghai")
    months = out[
        out.period_kind.eq("month") & out.scope_kind.eq("team") & out.dimension.eq("lead_source")
    ].set_index("period_start")
    march, february = pd.Timestamp("2026-03-01"), pd.Timestamp("2026-02-01")
    assert months.loc[march, ["won", "lost", "won_amount", "lost_amount"]].tolist() == [
        1,
        1,
        10,
        40,
    ]
    assert months.loc[march, "win_rate"] == 0.5
    assert months.loc[february, ["won", "lost", "won_amount"]].tolist() == [1, 0, 20]
    assert set(out.scope_id) == {"all", "T1"}
