"""The data-quality gate on frames: each kind of corruption gives exactly the quarantined keys
and reasons, or exactly the refusal, and every valid row passes."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loudou.canonical import TABLES
from loudou.config import load_settings
from loudou.quality import QualityRules, Suites, Validator, Verdict, gate
from loudou.simulator import simulate
from tests.conftest import EXAMPLE, SIM_NOW

RULES = QualityRules.from_settings(load_settings(EXAMPLE))


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


@pytest.fixture(scope="module")
def suites() -> Suites:
    return Suites.load()


@pytest.fixture(scope="module")
def clean(settings) -> dict[str, pd.DataFrame]:
    crm = simulate(settings.pipeline(), scale=0.02, seed=5, now=SIM_NOW)
    return crm.tables


def check(
    tables: dict[str, pd.DataFrame], validator: Validator, suites: Suites, rules=RULES, **kw
) -> Verdict:
    return gate(
        tables,
        live_opportunity_ids=kw.pop("live", None),
        warehouse_state=kw.pop("state", {}),
        previous_counts=kw.pop("counts", {}),
        read_in_full=set(TABLES),
        rules=rules,
        source_timezone="UTC",
        now=SIM_NOW,
        suites=suites,
        validator=validator,
    )


def copy(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {name: frame.copy() for name, frame in tables.items()}


def keys(table: str, frame: pd.DataFrame) -> set[str]:
    return set(frame[list(TABLES[table].key)].astype("str").agg(" | ".join, axis=1))


def assert_valid_rows_pass(clean, verdict: Verdict, held: dict[str, set[str]]) -> None:
    """Every row not expected in quarantine reached the output, and nothing else did."""
    for name in TABLES:
        expected = keys(name, clean[name]) - held.get(name, set())
        assert keys(name, verdict.frames[name]) == expected, name


def quarantined(verdict: Verdict) -> dict[tuple[str, str], str]:
    return dict(
        zip(
            zip(verdict.quarantine.table_name, verdict.quarantine.record_key),
            verdict.quarantine.reasons,
        )
    )


def deal_rows(clean, opportunity_id: str) -> dict[str, set[str]]:
    """A deal and its history: the unit that loads or waits together."""
    return {
        "opportunities": {opportunity_id},
        **{
            name: keys(name, clean[name][clean[name].opportunity_id.eq(opportunity_id)])
            for name in ("stage_history", "field_history")
        },
    }


def won_deal_with_history(clean) -> pd.Series:
    opps = clean["opportunities"]
    counts = clean["stage_history"].opportunity_id.value_counts()
    won = opps[opps.status.eq("won") & opps.opportunity_id.map(counts).ge(3)]
    return won.iloc[0]


def test_clean_data_passes_whole(clean, validator, suites):
    verdict = check(copy(clean), validator, suites)
    assert verdict.refusals == []
    assert verdict.quarantine.empty
    assert_valid_rows_pass(clean, verdict, {})
    assert verdict.results.success.all()
    # every table's suite ran: columns, key, types, references, and the written checks
    assert set(verdict.results.table_name) == set(TABLES)
    every_check = sum(len(suites.checks[table]) for table in TABLES)
    assert len(verdict.results) == every_check


ROW_CORRUPTIONS = {
    "dangling owner": ("owner_id", "U404", "owner_id U404 is not in users"),
    "unknown stage": (
        "stage",
        "神秘阶段",
        "stage '神秘阶段' is not a configured stage (map it in source.stage_mapping)",
    ),
    "negative amount": ("amount", -5.0, "amount -5.0 is negative or above quality.max_amount"),
    "wrong type": ("amount", "12万", "value of the wrong type: amount='12万'"),
    "unknown currency": ("currency", "XXX", "currency 'XXX' is not allowed (quality.currencies)"),
}


@pytest.mark.parametrize("kind", ROW_CORRUPTIONS)
def test_a_bad_deal_waits_in_quarantine_with_its_history(kind, clean, validator, suites):
    column, value, reason = ROW_CORRUPTIONS[kind]
    tables = copy(clean)
    deal = won_deal_with_history(clean)
    opps = tables["opportunities"]
    if isinstance(value, str) and column == "amount":
        opps["amount"] = opps.amount.astype(object)
    opps.loc[opps.opportunity_id.eq(deal.opportunity_id), column] = value

    verdict = check(tables, validator, suites)

    assert verdict.refusals == []
    held = deal_rows(clean, deal.opportunity_id)
    found = quarantined(verdict)
    assert found.pop(("opportunities", deal.opportunity_id)) == reason
    # the history waits with its deal, each row saying why
    assert set(found) == {(t, k) for t in ("stage_history", "field_history") for k in held[t]}
    assert set(found.values()) == {f"its opportunity {deal.opportunity_id} is quarantined"}
    assert_valid_rows_pass(clean, verdict, held)


def test_closed_before_created(clean, validator, suites):
    tables = copy(clean)
    deal = won_deal_with_history(clean)
    opps = tables["opportunities"]
    at = opps.opportunity_id.eq(deal.opportunity_id)
    opps.loc[at, "closed_at"] = deal.created_at - pd.Timedelta(days=2)

    verdict = check(tables, validator, suites)

    closed = deal.created_at - pd.Timedelta(days=2)
    assert quarantined(verdict)[("opportunities", deal.opportunity_id)] == (
        f"closed_at {closed} is before created_at {deal.created_at}"
    )
    assert_valid_rows_pass(clean, verdict, deal_rows(clean, deal.opportunity_id))


def test_broken_history_chain_holds_the_deal_back(clean, validator, suites):
    tables = copy(clean)
    deal = won_deal_with_history(clean)
    history = tables["stage_history"]
    rows = history[history.opportunity_id.eq(deal.opportunity_id)].sort_values("changed_at")
    second = rows.index[1]
    previous = history.at[rows.index[0], "to_stage"]
    wrong = "购买决策" if previous != "购买决策" else "待沟通"
    history.loc[second, "from_stage"] = wrong

    verdict = check(tables, validator, suites)

    found = quarantined(verdict)
    bad_key = keys("stage_history", history.loc[[second]]).pop()
    assert found[("stage_history", bad_key)] == (
        f"from_stage {wrong!r} is not the previous change's to_stage {previous!r}"
    )
    assert found[("opportunities", deal.opportunity_id)] == "stage_history rows quarantined"
    assert_valid_rows_pass(clean, verdict, deal_rows(clean, deal.opportunity_id))


def test_future_history_date(clean, validator, suites):
    tables = copy(clean)
    deal = won_deal_with_history(clean)
    history = tables["stage_history"]
    last = history[history.opportunity_id.eq(deal.opportunity_id)].changed_at.idxmax()
    future = pd.Timestamp(SIM_NOW) + pd.Timedelta(days=3)
    history.loc[last, "changed_at"] = future

    verdict = check(tables, validator, suites)

    bad_key = keys("stage_history", history.loc[[last]]).pop()
    assert quarantined(verdict)[("stage_history", bad_key)] == (
        f"changed_at {future} is in the future"
    )
    held = deal_rows(clean, deal.opportunity_id)
    assert_valid_rows_pass(clean, verdict, held)


def test_a_row_waits_on_a_new_row_it_references(clean, validator, suites):
    """A new user in quarantine holds back the new deals they own; known owners don't."""
    tables = copy(clean)
    users = tables["users"]
    rep = users[users.user_id.isin(tables["opportunities"].owner_id)].iloc[0].user_id
    users["hired_at"] = users.hired_at.astype(object)
    users.loc[users.user_id.eq(rep), "hired_at"] = "yesterday-ish"
    verdict = check(tables, validator, suites)
    found = quarantined(verdict)
    assert found[("users", rep)] == "value of the wrong type: hired_at='yesterday-ish'"
    owned = clean["opportunities"][clean["opportunities"].owner_id.eq(rep)].opportunity_id
    assert {k for t, k in found if t == "opportunities"} >= set(owned)
    assert found[("opportunities", owned.iloc[0])] == f"owner_id {rep} is quarantined in users"

    # the same rep already in the warehouse: their deals load
    state = {"users": clean["users"]}
    verdict = check(copy(tables), validator, suites, state=state)
    assert {t for t, _ in quarantined(verdict)} == {"users"}


def test_duplicate_key_stops_the_run(clean, validator, suites):
    tables = copy(clean)
    opps = tables["opportunities"]
    tables["opportunities"] = pd.concat([opps, opps.iloc[[3]]], ignore_index=True)
    verdict = check(tables, validator, suites)
    key = opps.opportunity_id.iloc[3]
    assert verdict.refusals == [
        "opportunities: expect_column_values_to_be_unique(opportunity_id) failed "
        f"(the key is not unique): 2 rows, e.g. {key}"
    ]


def test_missing_column_stops_the_run(clean, validator, suites):
    tables = copy(clean)
    tables["opportunities"] = tables["opportunities"].drop(columns="amount")
    verdict = check(tables, validator, suites)
    assert verdict.refusals == [
        "opportunities: expect_table_columns_to_match_set failed "
        "(a canonical column is missing): amount"
    ]


def test_empty_table_stops_the_run_only_after_it_had_rows(clean, validator, suites):
    tables = copy(clean)
    tables["users"] = tables["users"].iloc[0:0]
    counts = {name: len(frame) for name, frame in clean.items()}
    verdict = check(copy(tables), validator, suites, counts=counts)
    assert verdict.refusals[0] == (
        "users: expect_table_row_count_to_be_between failed (the table is empty): 0 rows"
    )
    # a first run on an empty CRM table is not an error in itself
    first = check(copy(tables), validator, suites)
    assert not any(r.startswith("users: expect_table_row_count") for r in first.refusals)


def test_an_incremental_source_with_no_deals_left_stops_the_run(clean, validator, suites):
    verdict = check(
        copy(clean),
        validator,
        suites,
        live=pd.Series([], dtype="str"),
        counts={"opportunities": 500},
    )
    assert verdict.refusals == [
        "opportunity_keys: expect_table_row_count_to_be_between failed "
        "(the source has no opportunities): 0 rows"
    ]


def test_too_many_failing_rows_stop_the_run(clean, validator, suites):
    """An unmapped stage on most deals is a broken extraction, not bad rows."""
    tables = copy(clean)
    opps = tables["opportunities"]
    opps.loc[opps.status.eq("open"), "stage"] = "Prospecting"
    verdict = check(tables, validator, suites)
    assert any(
        r.startswith("opportunities: ")
        and "more than quality.max_failing_share 5%" in r
        and "stage 'Prospecting' is not a configured stage" in r
        for r in verdict.refusals
    )


CORRUPTIONS = {
    "amount": -1.0,
    "stage": "??",
    "owner_id": "U-none",
    "currency": "USD",
    "closed_at": pd.Timestamp("1999-01-01"),
    "created_at": pd.NaT,
    "opportunity_id": None,
    "status": "maybe",
}


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    deals=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(sorted(CORRUPTIONS))),
        max_size=12,
    ),
    history=st.lists(
        st.tuples(
            st.integers(0, 10_000), st.sampled_from(["from_stage", "to_stage", "changed_at"])
        ),
        max_size=6,
    ),
)
def test_the_gate_never_crashes_and_never_drops_a_valid_row(
    clean, validator, suites, deals, history
):
    tables = copy(clean)
    opps, stage_history = tables["opportunities"], tables["stage_history"]
    bad_deals = set()
    for position, column in deals:
        row = opps.index[position % len(opps)]
        bad_deals.add(opps.at[row, "opportunity_id"])
        opps.loc[row, column] = CORRUPTIONS[column]
    for position, column in history:
        row = stage_history.index[position % len(stage_history)]
        bad_deals.add(stage_history.at[row, "opportunity_id"])
        value = pd.Timestamp("2099-01-01") if column == "changed_at" else "不存在"
        stage_history.loc[row, column] = value
    rules = replace(RULES, max_failing_share=1.0)

    verdict = check(tables, validator, suites, rules=rules)

    assert verdict.refusals == []
    for name in TABLES:
        # every row either passed or waits in quarantine
        waiting = verdict.quarantine.table_name.eq(name).sum()
        assert len(verdict.frames[name]) + waiting == len(tables[name]), name
        frame = clean[name]
        if "opportunity_id" in frame and name != "activities" and name != "leads":
            frame = frame[~frame.opportunity_id.isin(bad_deals)]
        assert keys(name, frame) <= keys(name, verdict.frames[name]), name
