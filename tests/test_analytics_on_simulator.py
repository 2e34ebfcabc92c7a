"""Analytics measured against the simulator's planted truth, and checked by independent SQL."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.nightly import nightly
from loudou.simulator import simulate, write_crm
from loudou.warehouse import open_warehouse
from tests.conftest import AS_OF, SIM_NOW, write_config
from tests.simulated import build_from_simulation


@pytest.fixture(scope="module")
def scale_one(settings):
    crm = simulate(
        settings.pipeline(), scale=1, seed=7, now=SIM_NOW, thresholds=settings.thresholds
    )
    return crm, build_from_simulation(crm, settings, AS_OF)


def precision_recall(found: set, truth: set) -> tuple[float, float]:
    hits = len(found & truth)
    return hits / max(len(found), 1), hits / max(len(truth), 1)


@pytest.mark.parametrize("kind", ["skipped_stage", "appeared_late", "regression"])
def test_hidden_deals_are_found_with_high_precision_and_recall(scale_one, kind):
    crm, tables = scale_one
    hygiene = tables["mart_hygiene"]
    found = set(hygiene[hygiene.kind == kind].subject_id)
    truth = set(crm.truth[kind])
    assert len(truth) > 50
    precision, recall = precision_recall(found, truth)
    assert precision >= 0.95 and recall >= 0.95, (kind, precision, recall)


def test_duplicate_account_groups_are_found_with_high_precision_and_recall(scale_one):
    crm, tables = scale_one
    hygiene = tables["mart_hygiene"]
    for kind in ("duplicate_account", "collision"):
        groups = hygiene[hygiene.kind == kind].groupby("group_id").subject_id.agg(frozenset)
        truth = {frozenset(group) for group in crm.truth[kind]}
        assert len(truth) > 20
        precision, recall = precision_recall(set(groups), truth)
        assert precision >= 0.95 and recall >= 0.95, (kind, precision, recall)


INDEPENDENT_MONTHLY_CONVERSION = """
WITH firsts AS (   -- the first stay of each deal in each stage, in Shanghai months
    SELECT opportunity_id, stage, stage_order,
           date_trunc('month', timezone('Asia/Shanghai', MIN(entered_at) AT TIME ZONE 'UTC'))
               AS period_start
    FROM fct_stage_interval GROUP BY opportunity_id, stage, stage_order
), reached AS (     -- the furthest a deal got: won deals passed every stage
    SELECT i.opportunity_id,
           CASE WHEN o.status = 'won' THEN 4 ELSE MAX(i.stage_order) END AS furthest,
           o.status, o.amount
    FROM fct_stage_interval i JOIN fct_opportunity o USING (opportunity_id)
    GROUP BY i.opportunity_id, o.status, o.amount
)
SELECT f.period_start::DATE AS period_start, f.stage,
       COUNT(*) AS entered,
       SUM(CASE WHEN r.furthest > f.stage_order THEN 1 ELSE 0 END) AS advanced,
       SUM(CASE WHEN r.furthest <= f.stage_order AND r.status = 'lost' THEN 1 ELSE 0 END) AS lost,
       SUM(CASE WHEN r.furthest > f.stage_order THEN COALESCE(r.amount, 0) ELSE 0 END)
           AS amount_advanced
FROM firsts f JOIN reached r USING (opportunity_id)
GROUP BY 1, 2
"""


def test_conversion_mart_agrees_with_an_independent_sql_query(prefect_server, tmp_path, settings):
    crm = simulate(settings.pipeline(), scale=0.3, seed=5, now=SIM_NOW)
    source = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    write_crm(crm, source)
    warehouse_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    nightly(config=str(write_config(tmp_path, source, warehouse_url)), as_of=AS_OF)
    warehouse = open_warehouse(warehouse_url)
    mart = warehouse.query(
        "SELECT period_start, stage, entered, advanced, lost, amount_advanced, conversion_rate "
        "FROM mart_stage_conversion WHERE as_of_date = :d AND period_kind = 'month' "
        "AND scope_kind = 'company' AND dimension = 'all' AND funnel = 'strict'",
        {"d": AS_OF},
    )
    independent = warehouse.query(INDEPENDENT_MONTHLY_CONVERSION)
    merged = mart.merge(
        independent,
        on=["period_start", "stage"],
        suffixes=("", "_sql"),
        how="left",
        validate="one_to_one",
    )
    assert len(merged) >= 40  # 12 months x 4 stages, minus the quiet ones
    for column in ("entered", "advanced", "lost", "amount_advanced"):
        pd.testing.assert_series_equal(
            merged[column].astype(float), merged[f"{column}_sql"].astype(float), check_names=False
        )
    expected_rate = merged.advanced_sql / (merged.advanced_sql + merged.lost_sql)
    pd.testing.assert_series_equal(merged.conversion_rate, expected_rate, check_names=False)


def test_planted_stalls_are_found_with_high_precision_and_recall(scale_one):
    crm, tables = scale_one
    stalled = tables["mart_stalled_deals"].set_index("opportunity_id")
    truth = crm.truth["stalled"]
    assert len(truth) > 50
    precision, recall = precision_recall(set(stalled.index), set(truth))
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    agree = [
        set(stalled.reasons[o].split(",")) == set(r) for o, r in truth.items() if o in stalled.index
    ]
    assert sum(agree) / len(agree) >= 0.95


def test_every_weekly_bridge_balances_for_every_scope(scale_one):
    from transforms.movement import bridge_gap

    _, tables = scale_one
    movement = tables["mart_pipeline_movement"]
    gaps = bridge_gap(movement)
    assert len(gaps) >= 12 * 40  # 12 weeks x (company, teams, territories, reps)
    assert (gaps.deal_gap == 0).all()
    assert gaps.amount_gap.abs().max() < 0.005  # to the cent
    assert movement[movement.bucket.isin(["created", "won", "advanced"])].deal_count.sum() > 0


def test_rebalancing_lowers_every_unbalanced_territory_and_keeps_late_deals(scale_one, settings):
    _, tables = scale_one
    balance = tables["mart_territory_balance"]
    unbalanced = balance[balance.cv > settings.territory.target_cv]
    assert len(unbalanced) >= 2
    assert (unbalanced.cv_after_rebalancing < unbalanced.cv).all()
    assert (balance.cv_after_rebalancing <= balance.cv).all()
    moves = tables["mart_rebalancing"]
    facts = tables["fct_opportunity"]
    moved = facts[facts.status.eq("open")].merge(
        moves, left_on=["account_id", "owner_id"], right_on=["account_id", "from_owner_id"]
    )
    assert len(moved) and (moved.probability < 0.75).all()
