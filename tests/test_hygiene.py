"""Deal hygiene on hand-made data: hidden deals, regressions and duplicate customers."""

from __future__ import annotations

import pandas as pd

from loudou.canonical import TABLES, coerce
from tests.fixtures import STAGES, WON, A, B, C, D, history, opportunities
from tests.test_funnel import DAY_END, HISTORY, OPPS
from transforms.hygiene import (
    account_match_keys,
    company_name_key,
    duplicate_account_groups,
    hygiene,
)
from transforms.intervals import stage_entries, stage_intervals

AS_OF = pd.Timestamp("2026-03-31")


def accounts(*rows: dict) -> pd.DataFrame:
    return coerce(TABLES["accounts"], pd.DataFrame(rows), "UTC")


def test_name_variants_of_one_company_share_a_key():
    variants = [
        "北京华瑞科技有限公司",
        "北京华瑞科技",
        "北京华瑞科技（中国）有限公司",
        "北京华瑞科技(中国)有限公司",
        " 北京华瑞科技 股份有限公司",
        "北京华瑞科技集团",
        "北京华瑞科技集团有限公司",
    ]
    assert company_name_key(pd.Series(variants)).nunique() == 1
    english = [
        "Acme Robotics Co., Ltd.",
        "ACME ROBOTICS CO LTD",
        "acme robotics inc",
        "Ａｃｍｅ Robotics LLC",
        "Acme Robotics GmbH ",
        "Acme-Robotics Corp.",
    ]
    assert company_name_key(pd.Series(english)).unique().tolist() == ["acmerobotics"]
    different = [
        "北京华瑞科技有限公司",
        "上海华瑞科技有限公司",
        "北京华瑞电子有限公司",
        "Acme Robotix Ltd",
    ]
    assert company_name_key(pd.Series(different)).nunique() == 4


def test_duplicate_groups_by_name_tax_id_phone_and_company_domain_not_free_mail():
    frame = accounts(
        {"account_id": "A1", "name": "北京华瑞科技有限公司", "owner_id": "U1"},
        {"account_id": "A2", "name": "北京华瑞科技（中国）有限公司", "owner_id": "U2"},
        {"account_id": "A3", "name": "Acme Co., Ltd.", "tax_id": "91310000X", "owner_id": "U1"},
        {"account_id": "A4", "name": "Totally Different", "tax_id": " 91310000x", "owner_id": "U3"},
        {"account_id": "A5", "name": "Alpha", "email": "boss@qq.com", "owner_id": "U1"},
        {"account_id": "A6", "name": "Beta", "email": "ceo@qq.com", "owner_id": "U2"},
        {"account_id": "A7", "name": "Gamma", "phone": "+86 21 1234-5678", "owner_id": "U1"},
        {"account_id": "A8", "name": "Delta", "phone": "(021) 12345678", "owner_id": "U2"},
        {"account_id": "A9", "name": "Epsilon", "email": "sales@epsilon.cn", "owner_id": "U1"},
        {
            "account_id": "A10",
            "name": "Zeta",
            "website": "https://www.epsilon.cn/about",
            "owner_id": "U2",
        },
        {"account_id": "A11", "name": "Eta", "owner_id": "U1"},
    )
    groups = duplicate_account_groups(frame).set_index("account_id")
    assert groups.group_id.to_dict() == {
        "A1": "DUP-A1",
        "A2": "DUP-A1",
        "A3": "DUP-A3",
        "A4": "DUP-A3",
        "A7": "DUP-A7",
        "A8": "DUP-A7",
        "A9": "DUP-A10",
        "A10": "DUP-A10",
    }
    assert groups.linked_by.to_dict() == {
        "A1": "name",
        "A2": "name",
        "A3": "tax id",
        "A4": "tax id",
        "A7": "phone",
        "A8": "phone",
        "A9": "domain",
        "A10": "domain",
    }
    # the keys made once for every account (as a backfill does) give a day's subset the
    # groups it gets alone: A2 not yet created that day leaves A1 alone
    keys = account_match_keys(frame)
    later = frame[frame.account_id.ne("A2")].iloc[::-1]
    pd.testing.assert_frame_equal(
        duplicate_account_groups(later, keys), duplicate_account_groups(later)
    )
    assert "A1" not in set(duplicate_account_groups(later, keys).account_id)


def test_hidden_deals_regressions_and_open_deal_checks():
    opps = pd.concat(
        [
            OPPS,
            opportunities(
                # P6 walks every stage but is won 3 days after creation
                {
                    "opportunity_id": "P6",
                    "owner_id": "U1",
                    "stage": WON,
                    "status": "won",
                    "created_at": "2026-02-01",
                    "closed_at": "2026-02-04",
                },
                # P7 is won with no funnel history at all
                {
                    "opportunity_id": "P7",
                    "owner_id": "U2",
                    "stage": WON,
                    "status": "won",
                    "created_at": "2026-02-01",
                    "closed_at": "2026-02-20",
                },
                # P8 moves back from C to B twice, open, with a passed close date and no amount
                {
                    "opportunity_id": "P8",
                    "owner_id": "U2",
                    "stage": B,
                    "created_at": "2026-01-01",
                    "amount": None,
                    "expected_close_date": "2026-03-30",
                },
                # P9 jumps from A to C and visits B only afterwards: B was still skipped
                {
                    "opportunity_id": "P9",
                    "owner_id": "U1",
                    "stage": C,
                    "created_at": "2026-01-01",
                    "expected_close_date": "2026-06-30",
                },
            ),
        ],
        ignore_index=True,
    )
    hist = pd.concat(
        [
            HISTORY,
            history(
                ("P6", "2026-02-01 01:00", A, None),
                ("P6", "2026-02-02", B, A),
                ("P6", "2026-02-02 12:00", C, B),
                ("P6", "2026-02-03", D, C),
                ("P6", "2026-02-04", WON, D),
                ("P7", "2026-02-20", WON, None),
                ("P8", "2026-01-01", A, None),
                ("P8", "2026-01-02", B, A),
                ("P8", "2026-01-03", C, B),
                ("P8", "2026-01-04", B, C),
                ("P8", "2026-01-05", C, B),
                ("P8", "2026-01-06", B, C),
                ("P9", "2026-01-01", A, None),
                ("P9", "2026-01-02", C, A),
                ("P9", "2026-01-03", B, C),
                ("P9", "2026-01-04", C, B),
            ),
        ],
        ignore_index=True,
    )
    entries = stage_entries(opps, hist)
    intervals = stage_intervals(opps, entries, STAGES)
    out = hygiene(
        opps,
        entries,
        intervals,
        accounts({"account_id": "A1", "name": "X"}),
        STAGES,
        as_of_date=AS_OF,
        day_end=DAY_END,
        timezone="UTC",
        quick_win_days=7,
    )
    found = {(r.kind, r.subject_id): r.detail for r in out.itertuples()}
    assert found == {
        ("skipped_stage", "P2"): "never recorded at 发现机会",
        ("skipped_stage", "P9"): "recorded at 发现机会 only after a later stage",
        ("regression", "P9"): "明确需求 → 发现机会",
        ("appeared_late", "P5"): "first seen at 明确需求",
        ("appeared_late", "P6"): "won 3 days after creation",
        ("appeared_late", "P7"): "won with no funnel history",
        ("regression", "P8"): "明确需求 → 发现机会 (2 times)",
        ("past_close_date", "P8"): "expected 2026-03-30",
        ("missing_amount", "P8"): "open deal without an amount",
    }
    assert out.set_index(["kind", "subject_id"]).owner_ids[("regression", "P8")] == "U2"


def test_collision_is_a_duplicate_group_with_open_deals_of_two_reps():
    opps = opportunities(
        {
            "opportunity_id": "Q1",
            "account_id": "A1",
            "owner_id": "U1",
            "stage": A,
            "created_at": "2026-03-01",
            "expected_close_date": "2026-05-01",
        },
        {
            "opportunity_id": "Q2",
            "account_id": "A2",
            "owner_id": "U2",
            "stage": A,
            "created_at": "2026-03-02",
            "expected_close_date": "2026-05-01",
        },
        {
            "opportunity_id": "Q3",
            "account_id": "A3",
            "owner_id": "U1",
            "stage": A,
            "created_at": "2026-03-02",
            "expected_close_date": "2026-05-01",
        },
        {
            "opportunity_id": "Q4",
            "account_id": "A4",
            "owner_id": "U1",
            "stage": A,
            "created_at": "2026-03-02",
            "expected_close_date": "2026-05-01",
        },
    )
    accts = accounts(
        {"account_id": "A1", "name": "深圳新中天能源有限公司", "owner_id": "U1"},
        {"account_id": "A2", "name": "深圳新中天能源（中国）有限公司", "owner_id": "U2"},
        # A3 and A4 are one customer too, but one rep works both: no collision
        {"account_id": "A3", "name": "Nova Tek GmbH", "owner_id": "U1"},
        {"account_id": "A4", "name": "NOVA TEK", "owner_id": "U3"},
    )
    entries = stage_entries(opps, history())
    out = hygiene(
        opps,
        entries,
        stage_intervals(opps, entries, STAGES),
        accts,
        STAGES,
        as_of_date=AS_OF,
        day_end=DAY_END,
        timezone="UTC",
        quick_win_days=7,
    )
    collisions = out[out.kind == "collision"]
    assert sorted(collisions.subject_id) == ["A1", "A2"]
    assert set(collisions.owner_ids) == {"U1,U2"}
    assert set(collisions.detail) == {"open deals by U1, U2"}
    assert sorted(out[out.kind == "duplicate_account"].group_id) == [
        "DUP-A1",
        "DUP-A1",
        "DUP-A3",
        "DUP-A3",
    ]
