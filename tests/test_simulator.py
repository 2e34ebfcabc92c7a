"""The CRM simulator: realistic, linear in scale, and honest about what it planted."""

from __future__ import annotations

import numpy as np
import pandas as pd

from loudou.simulator import simulate
from tests.conftest import SIM_NOW


def test_scale_grows_the_crm_linearly(settings):
    small = simulate(settings.pipeline(), scale=0.1, now=SIM_NOW).tables
    large = simulate(settings.pipeline(), scale=0.4, now=SIM_NOW).tables
    for table in ("opportunities", "accounts", "leads", "stage_history", "activities"):
        ratio = len(large[table]) / len(small[table])
        assert 3.4 < ratio < 4.6, (table, ratio)
    assert (
        len(simulate(settings.pipeline(), scale=1, now=SIM_NOW).tables["opportunities"]) == 10_000
    )


def test_same_seed_same_crm(settings):
    first = simulate(settings.pipeline(), scale=0.05, seed=3, now=SIM_NOW).tables["opportunities"]
    again = simulate(settings.pipeline(), scale=0.05, seed=3, now=SIM_NOW).tables["opportunities"]
    pd.testing.assert_frame_equal(first, again)


def test_realistic_shape(small_crm, settings):
    t = small_crm.tables
    opps = t["opportunities"]
    assert set(opps.status) == {"open", "won", "lost"}
    assert 0.1 < (opps.status == "won").mean() < 0.35
    assert set(opps.stage) <= set(settings.pipeline().open_stage_names) | {"成单完成", "输单"}
    assert (opps.closed_at.isna() == (opps.status == "open")).all()
    assert (t["stage_history"].changed_at <= pd.Timestamp(SIM_NOW)).all()
    assert (t["activities"].occurred_at <= pd.Timestamp(SIM_NOW)).all()
    names = t["accounts"].name
    assert names.str.contains("有限公司").any() and names.str.contains(r"[A-Za-z]{4}").any()
    assert t["users"].name.str.match(r"^[\u4e00-\u9fff]{2,3}$").mean() > 0.6
    assert (~t["users"].is_active).any(), "some reps have left"
    assert set(t["targets"].scope_kind) == {"user", "team"}
    # the current stage is the last recorded one
    last = t["stage_history"].sort_values("changed_at").groupby("opportunity_id").to_stage.last()
    assert (
        opps.set_index("opportunity_id").stage == last.reindex(opps.opportunity_id).values
    ).all()


def test_planted_cases_are_in_the_data(small_crm, settings):
    truth, t = small_crm.truth, small_crm.tables
    history = t["stage_history"]
    visited = set(zip(history.opportunity_id, history.to_stage))
    assert truth["skipped_stage"], "some skips are planted"
    for opp, stage in truth["skipped_stage"].items():
        assert (opp, stage) not in visited
    for opp, kind in truth["appeared_late"].items():
        first = history[history.opportunity_id == opp].sort_values("changed_at").to_stage.iloc[0]
        assert first in ("成单完成", "购买决策"), (opp, kind, first)
    opps = t["opportunities"].set_index("opportunity_id")
    stalled = list(truth["stalled"])
    assert stalled and (opps.loc[stalled, "status"] == "open").all()
    accounts = t["accounts"].set_index("account_id")
    for group in truth["duplicate_account"]:
        assert accounts.loc[group, "owner_id"].nunique() == 2
    assert truth["collision"]
    probs = list(truth["true_win_probability"].values())
    assert probs == sorted(probs) and all(0 < p < 1 for p in probs)


def test_larger_scales_keep_their_proportions(settings):
    crm = simulate(settings.pipeline(), scale=5, now=SIM_NOW)
    assert len(crm.tables["opportunities"]) == 50_000
    assert np.isclose(len(crm.tables["accounts"]), 15_300, rtol=0.01)
