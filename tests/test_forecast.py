"""Forecasts: the weighted and accuracy arithmetic on hand-made frames, the Monte Carlo draws,
and the backtest on the simulator, whose true win probabilities are known."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import yaml

from flows.tasks import RunPlan, backtest
from loudou.canonical import TABLES, coerce
from loudou.config import Pipeline, Stage, parse_settings
from loudou.simulator import simulate
from tests.conftest import EXAMPLE, SIM_NOW
from tests.fixtures import LOST, STAGES, WON, opportunities
from tests.warehouse_helpers import built_by_sql
from transforms.forecast import (
    ForecastRules,
    backtest_summary,
    forecast,
    monte_carlo_totals,
    simulated_scopes,
    target_by_scope,
)
from transforms.stages import stage_dimension

AS_OF = pd.Timestamp("2026-11-20")
MOMENT = pd.Timestamp("2026-11-21")  # the as-of day's end, UTC


PIPELINE = Pipeline(
    name="p",
    stages=[Stage(name="a", probability=0.2), Stage(name="b", probability=0.6)],
    won_stage="won",
    lost_stage="lost",
    qualified_stage="b",
)


def deal(i, stage, status, amount, close, owner="u1", closed_at=None):
    return {
        "opportunity_id": f"o{i}",
        "owner_id": owner,
        "pipeline": "p",
        "stage": stage,
        "status": status,
        "amount": amount,
        "expected_close_date": pd.Timestamp(close),
        "probability": {"a": 0.2, "b": 0.6, "won": 1.0, "lost": 0.0}[stage],
        "closed_at": pd.Timestamp(closed_at) if closed_at else pd.NaT,
    }


def test_weighted_forecast_arithmetic():
    deals = pd.DataFrame(
        [
            deal(1, "a", "open", 1000, "2026-11-25"),  # this month: 0.2 × 1000 = 200
            deal(2, "b", "open", 500, "2026-11-30"),  # this month: 0.6 × 500 = 300
            deal(3, "b", "open", 2000, "2026-12-10"),  # next month: 0.6 × 2000 = 1200
            deal(4, "a", "open", 100, "2026-11-28", owner="u2"),  # other team: 0.2 × 100 = 20
            deal(5, "won", "won", 700, "2026-11-05", closed_at="2026-11-05 03:00"),  # won: 700
            deal(6, "won", "won", 900, "2026-10-30", closed_at="2026-10-30 03:00"),  # last month
        ]
    )
    entries = pd.DataFrame(
        {
            "pipeline": "p",
            "opportunity_id": deals.opportunity_id,
            "stage": ["a", "b", "b", "a", "b", "b"],
            "entered_at": pd.Timestamp("2026-10-01"),
        }
    )
    users = pd.DataFrame(
        {"user_id": ["u1", "u2"], "team_id": ["t1", "t2"], "territory_id": ["r1", "r1"]}
    )
    targets = pd.DataFrame(
        {
            "scope_kind": ["user", "user", "team"],
            "scope_id": ["u1", "u2", "t1"],
            "period_start": pd.Timestamp("2026-11-01"),
            "period_end": pd.Timestamp("2026-11-30"),
            "amount": [3000.0, 1000.0, 3500.0],
        }
    )
    out = forecast(
        deals,
        entries,
        stage_dimension([PIPELINE]),
        users,
        targets,
        as_of_date=AS_OF,
        moment=MOMENT,
        timezone="UTC",
        rules=ForecastRules(draws=200),
    )
    weighted = out[out.method.eq("weighted") & out.period_kind.eq("month")].set_index(
        ["period_start", "scope_kind", "scope_id"]
    )
    nov, dec = pd.Timestamp("2026-11-01"), pd.Timestamp("2026-12-01")
    u1 = weighted.loc[(nov, "user", "u1")]
    assert u1.won_to_date == 700
    assert u1.expected == pytest.approx(700 + 200 + 300)
    assert u1.open_pipeline == 3500  # every open deal, whatever its close date
    assert u1.target == 3000
    assert u1.coverage == pytest.approx(3500 / (3000 - 700))
    assert u1.gap == pytest.approx(3000 - 1200)
    assert weighted.loc[(nov, "team", "t1")].target == 3500  # the team's own target wins
    company = weighted.loc[(nov, "company", "all")]
    assert company.expected == pytest.approx(700 + 200 + 300 + 20)
    assert company.target == 4000  # no company row: the reps' targets summed
    assert weighted.loc[(nov, "territory", "r1")].target == 4000
    assert weighted.loc[(dec, "user", "u1")].expected == pytest.approx(1200)
    assert np.isnan(weighted.loc[(dec, "user", "u1")].target)  # no December target
    quarter = out[out.method.eq("weighted") & out.period_kind.eq("quarter")]
    q4 = quarter.set_index(["period_start", "scope_kind", "scope_id"]).loc[
        (pd.Timestamp("2026-10-01"), "user", "u1")
    ]
    assert q4.won_to_date == 700 + 900
    assert q4.expected == pytest.approx(1600 + 200 + 300 + 1200)
    # monte_carlo rows carry ordered quantiles and a probability
    mc = out[out.method.eq("monte_carlo")]
    assert (mc.p10 <= mc.p50).all() and (mc.p50 <= mc.p90).all()
    assert mc.p_hit_target.dropna().between(0, 1).all()


def accuracy(
    forecasts: pd.DataFrame, as_of: str, replayed: pd.DataFrame | None = None
) -> pd.DataFrame:
    """mart_forecast_accuracy as the warehouse scores `forecasts` (kept) and `replayed`
    (mart_forecast_backtest) against October's deals: u1 and u2 each won 100 in October; u3
    lost one; u4 won one only in November."""
    deals = opportunities(
        *(
            {
                "opportunity_id": deal,
                "owner_id": owner,
                "stage": WON if status == "won" else LOST,
                "status": status,
                "amount": 100.0,
                "created_at": "2026-09-01",
                "closed_at": closed,
            }
            for deal, owner, status, closed in [
                ("D1", "u1", "won", "2026-10-05"),
                ("D2", "u2", "won", "2026-10-31 23:00"),
                ("D3", "u3", "lost", "2026-10-10"),
                ("D4", "u4", "won", "2026-11-01 00:00"),
            ]
        )
    )
    users = pd.DataFrame({"user_id": ["u1", "u2", "u3", "u4"]})
    inputs = {"mart_forecast": forecasts, "stg_opportunities": deals, "stg_users": users}
    if replayed is not None:
        inputs["mart_forecast_backtest"] = replayed
    day = pd.Timestamp(as_of).date()
    return built_by_sql("mart_forecast_accuracy", inputs, stages=STAGES, as_of=day)


def test_accuracy_arithmetic():
    forecasts = pd.DataFrame(
        {
            "as_of_date": pd.Timestamp("2026-10-01"),
            "period_kind": "month",
            "period_start": pd.Timestamp("2026-10-01"),
            "period_end": pd.Timestamp("2026-10-31"),
            "scope_kind": "user",
            "scope_id": ["u1", "u2", "u3", "u4"],
            "method": "weighted",
            "expected": [90.0, 250.0, 10.0, 40.0],
            "p10": np.nan,
            "p90": np.nan,
        }
    )
    scored = accuracy(forecasts, "2026-11-01").set_index("scope_id")
    assert scored.loc["u1", "accuracy"] == pytest.approx(0.9)  # 1 - 10/100
    assert scored.loc["u1", "bias"] == pytest.approx(-0.1)  # 10 too low
    assert scored.loc["u2", "accuracy"] == 0  # 1 - 150/100 < 0
    assert scored.loc["u2", "bias"] == pytest.approx(1.5)
    assert scored.loc["u3", "actual"] == 0 and np.isnan(scored.loc["u3", "accuracy"])  # lost
    assert np.isnan(scored.loc["u4", "bias"])  # won in November: nothing booked in October
    assert (scored.lead_days == 30).all()  # 1 Oct to 31 Oct
    assert (scored.origin == "live").all()
    # a period not closed yet is not scored
    assert accuracy(forecasts, "2026-10-31").empty


def test_a_replayed_forecast_is_scored_as_a_kept_one_and_marked_backtest():
    kept = pd.DataFrame(
        {
            "as_of_date": pd.Timestamp("2026-10-01"),
            "period_kind": "month",
            "period_start": pd.Timestamp("2026-10-01"),
            "period_end": pd.Timestamp("2026-10-31"),
            "scope_kind": "user",
            "scope_id": ["u1"],
            "method": "weighted",
            "expected": [90.0],
            "p10": np.nan,
            "p90": np.nan,
        }
    )
    # the same month forecast for u1 and u2 a month ahead, replayed from history
    replayed = kept.assign(as_of_date=pd.Timestamp("2026-09-01"), expected=120.0)
    replayed = pd.concat([replayed, replayed.assign(scope_id="u2", expected=50.0)])
    scored = accuracy(kept, "2026-11-01", replayed).set_index(["origin", "scope_id"])
    assert scored.loc[("live", "u1"), "accuracy"] == pytest.approx(0.9)  # 1 - 10/100
    assert scored.loc[("backtest", "u1"), "accuracy"] == pytest.approx(0.8)  # 1 - 20/100
    assert scored.loc[("backtest", "u2"), "bias"] == pytest.approx(-0.5)  # 50 too low
    assert (scored.loc["backtest", "lead_days"] == 60).all()  # 1 Sep to 31 Oct
    assert len(scored) == 3


def test_monte_carlo_draws_agree_with_the_probabilities():
    rng = np.random.default_rng(1)
    n, months = 3000, 9
    probability = rng.dirichlet(np.ones(months + 1), n)[:, :months] * 0.8
    amount = rng.uniform(100, 1000, n)
    group = rng.integers(0, 4, n)
    periods = [[0], [1], [0, 1, 2]]
    totals = monte_carlo_totals(
        amount, probability, group, 4, periods, draws=4000, seed=3, chunk=700
    )
    assert totals.shape == (3, 4, 4000)
    for p, months_in in enumerate(periods):
        for g in range(4):
            mine = group == g
            p_in = probability[mine][:, months_in].sum(axis=1)
            mean = (amount[mine] * p_in).sum()
            sd = np.sqrt((amount[mine] ** 2 * p_in * (1 - p_in)).sum())
            # the mean of 4000 draws is within 5 standard errors of the exact expectation
            assert abs(totals[p, g].mean() - mean) < 5 * sd / np.sqrt(4000)
            assert totals[p, g].std() == pytest.approx(sd, rel=0.1)
    # a deal won for sure this month books its amount in every draw, never in another month
    sure = np.zeros((2, months))
    sure[:, 0] = 1
    certain = monte_carlo_totals(np.array([5.0, 7.0]), sure, np.array([0, 0]), 1, periods, 50, 0, 1)
    assert (certain[0, 0] == 12).all() and (certain[1, 0] == 0).all()


def settings_with(probabilities: list[float] | None = None):
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    if probabilities:
        for stage, p in zip(data["pipelines"][0]["stages"], probabilities):
            stage["probability"] = p
    return parse_settings(data)


def run_backtest(settings, scale: float = 1.0):
    crm = simulate(settings.pipeline(), scale=scale, seed=11, now=SIM_NOW)
    state = {name: coerce(table, crm.tables[name], "UTC") for name, table in TABLES.items()}
    plan = dataclasses.replace(RunPlan.from_settings(settings), forecast=ForecastRules(draws=1000))
    return crm, backtest(state, plan, SIM_NOW.date(), periods=6)


def test_chance_to_hit_target_is_the_share_of_draws_reaching_it_with_what_is_won():
    # one period, two owners of team T1 in territories R1 and R2, four draws each
    simulated = np.array([[[0.0, 100.0, 200.0, 300.0], [50.0, 50.0, 50.0, 50.0]]])
    members = pd.DataFrame(
        {"owner_id": ["u1", "u2"], "team_id": ["T1", "T1"], "territory_id": ["R1", "R2"]}
    )
    start = pd.Timestamp("2026-11-01")
    periods = pd.DataFrame({"period_kind": ["month"], "period_start": [start]})
    goals = pd.DataFrame(
        {
            "period_kind": "month",
            "period_start": start,
            "scope_kind": ["company", "team", "user", "user"],
            "scope_id": ["all", "T1", "u1", "u2"],
            "won_to_date": [100.0, 0.0, 0.0, 0.0],
            "target": [400.0, 150.0, np.nan, 50.0],
        }
    ).set_index(["period_kind", "period_start", "scope_kind", "scope_id"])
    out = simulated_scopes(simulated, members, periods, goals).set_index(["scope_kind", "scope_id"])
    chance = out.p_hit_target
    # company and team: draws 50, 150, 250, 350; the company has 100 won, so 150 ... 450
    assert chance["company", "all"] == 0.25  # only 450 reaches 400
    assert chance["team", "T1"] == 0.75  # 150 reaches 150: reaching counts
    assert chance["user", "u2"] == 1.0
    assert np.isnan(chance["user", "u1"])  # no target
    assert np.isnan(chance["territory", "R1"])  # no row in the goals
    assert out.loc[("user", "u1"), "p50"] == 150.0


def test_learned_win_rates_beat_wrong_configured_probabilities():
    """Configured far from the truth (0.9 everywhere, the truth is 0.24 to 0.8), the weighted
    forecast misses; the historical method learns the rates from closed deals."""
    settings = settings_with([0.9, 0.9, 0.9, 0.9])
    crm, cases = run_backtest(settings)
    truth = crm.truth["true_win_probability"]
    assert max(truth.values()) <= 0.8  # the configured 0.9 is wrong for every stage
    summary = backtest_summary(cases).set_index(["method", "months_ahead"])
    for ahead in (0, 1):
        historical = summary.loc[("historical", ahead)]
        weighted = summary.loc[("weighted", ahead)]
        assert historical.accuracy > weighted.accuracy + 0.05
        assert historical.company_accuracy > weighted.company_accuracy
    # over every lead and scope too (two months ahead both miss the deals not yet created)
    scored = cases[cases.actual > 0].groupby("method").accuracy.mean()
    assert scored["historical"] > scored["weighted"]


def test_monte_carlo_intervals_are_calibrated_for_the_current_and_next_month():
    _, cases = run_backtest(settings_with())
    mc = cases[cases.method.eq("monte_carlo") & cases.months_ahead.le(1) & cases.actual.gt(0)]
    inside = mc.actual.between(mc.p10, mc.p90)
    assert len(mc) > 300
    # above 90% would mean intervals too wide to be useful, below 70% overconfident
    assert 0.70 <= inside.mean() <= 0.90


def test_a_quarter_holds_its_months_targets_and_its_own_a_month_only_its_own():
    """A rep with monthly targets for January (100) and February (50) and a quota set for the
    whole first quarter (900, as an org forecasting by quarter sets it): January's target is
    100, February's 50, the quarter's 100 + 50 + 900 = 1050, for the rep, the team and the
    company alike."""
    day = pd.Timestamp
    targets = pd.DataFrame(
        {
            "scope_kind": "user",
            "scope_id": "u1",
            "period_start": [day("2027-01-01"), day("2027-02-01"), day("2027-01-01")],
            "period_end": [day("2027-01-31"), day("2027-02-28"), day("2027-03-31")],
            "amount": [100.0, 50.0, 900.0],
        }
    )
    users = pd.DataFrame({"user_id": ["u1"], "team_id": ["t1"], "territory_id": [None]})
    periods = pd.DataFrame(
        {
            "period_kind": ["month", "month", "quarter"],
            "period_start": [day("2027-01-01"), day("2027-02-01"), day("2027-01-01")],
            "period_end": [day("2027-01-31"), day("2027-02-28"), day("2027-03-31")],
        }
    )
    got = target_by_scope(targets, users, periods).set_index(
        ["period_kind", "period_start", "scope_kind", "scope_id"]
    )
    for kind, scope in [("user", "u1"), ("team", "t1"), ("company", "all")]:
        assert got.target[("month", day("2027-01-01"), kind, scope)] == 100
        assert got.target[("month", day("2027-02-01"), kind, scope)] == 50
        assert got.target[("quarter", day("2027-01-01"), kind, scope)] == 1050
