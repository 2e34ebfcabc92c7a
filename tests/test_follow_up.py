"""mart_follow_up (each rep's deals to act on today) on hand-made deals; every list below is
worked out by hand."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml

from flows.follow_up import morning_follow_up
from loudou.digest import DigestError
from loudou.warehouse import open_warehouse
from tests.conftest import AS_OF as BUILT_AS_OF
from tests.conftest import digest_config
from tests.fixtures import STAGES
from tests.warehouse_helpers import built_by_sql

AS_OF = pd.Timestamp("2026-03-31")  # a Tuesday; the next seven days end on 6 April
T = pd.Timestamp
FAR = T("2026-06-30")

USERS = pd.DataFrame(
    {
        "user_id": ["U1", "U2", "U3", "U9"],
        "team_id": ["T1", "T1", "T2", "T1"],
        "is_active": [True, True, True, False],
        # U3 leaves in May: still working this week; U9 left in March: mart_handover's
        "left_at": [None, None, T("2026-05-01"), T("2026-03-01")],
    }
)
# opportunity_id, owner, status, amount, probability, expected close, stall reasons
DEALS = [
    ("D1", "U1", "open", 1000.0, 0.5, FAR, "no_activity"),  # at stake 500
    ("D2", "U1", "open", 4000.0, 0.5, T("2026-04-03"), None),  # 2,000, closes Friday
    ("D3", "U1", "open", 1000.0, 0.1, T("2026-03-15"), "no_activity,past_close_date"),  # 100
    ("D4", "U1", "open", 9000.0, 0.5, FAR, None),  # nothing to do
    ("D5", "U1", "won", 9000.0, 1.0, T("2026-03-20"), "past_close_date"),  # closed
    ("D11", "U1", "open", None, 0.25, FAR, "over_stage_limit"),  # no amount: nothing at stake
    ("D6", "U2", "open", 600.0, 0.25, FAR, None),  # 150, taken over from U9 on 28 March
    ("D7", "U2", "open", 600.0, 0.25, FAR, None),  # taken over on 10 March: settled
    ("D12", "U2", "open", 100.0, 0.5, T("2026-04-01"), "pushed_repeatedly"),  # 50
    ("D8", "U9", "open", 5000.0, 0.5, T("2026-03-01"), "past_close_date"),  # U9 has left
    ("D9", "U3", "open", 100.0, 0.5, T("2026-04-06"), None),  # the seventh day
    ("D10", "U3", "open", 100.0, 0.5, T("2026-04-07"), None),  # the eighth: next week's
]
OWNER_CHANGES = [
    ("D6", "owner_id", T("2026-03-28 09:00"), "U9", "U2"),
    ("D7", "owner_id", T("2026-03-10 09:00"), "U9", "U2"),
    ("D1", "amount", T("2026-03-30 09:00"), "900", "1000"),  # not an owner change
]


def follow_up() -> pd.DataFrame:
    deals = pd.DataFrame(
        DEALS,
        columns=[
            "opportunity_id",
            "owner_id",
            "status",
            "amount",
            "probability",
            "expected_close_date",
            "stall_reasons",
        ],
    )
    deals = deals.assign(
        weighted_amount=deals.amount * deals.probability,
        is_stalled=deals.stall_reasons.notna(),
        team_id=deals.owner_id.map(USERS.set_index("user_id").team_id),
        name="项目 " + deals.opportunity_id,
        stage=STAGES.stage.iat[0],
        days_since_activity=30,
    )
    inputs = {
        "stg_users": USERS,
        "stg_field_history": pd.DataFrame(
            OWNER_CHANGES,
            columns=["opportunity_id", "field", "changed_at", "old_value", "new_value"],
        ),
        "day_opportunity": deals,
    }
    out = built_by_sql("mart_follow_up", inputs, stages=STAGES, as_of=AS_OF.date())
    return out.sort_values(["owner_id", "priority"], ignore_index=True)


def test_each_rep_gets_the_deals_to_act_on_by_what_is_at_stake():
    out = follow_up()
    listed = out[["owner_id", "priority", "opportunity_id", "focus", "reasons"]]
    assert listed.values.tolist() == [
        ["U1", 1, "D2", "closing_this_week", "closing_this_week"],
        ["U1", 2, "D1", "no_activity", "no_activity"],
        # the passed close date is asked about before the silence
        ["U1", 3, "D3", "past_close_date", "no_activity,past_close_date"],
        ["U1", 4, "D11", "over_stage_limit", "over_stage_limit"],
        ["U2", 1, "D6", "handed_over", "handed_over"],
        ["U2", 2, "D12", "closing_this_week", "pushed_repeatedly,closing_this_week"],
        ["U3", 1, "D9", "closing_this_week", "closing_this_week"],
    ]
    assert set(out.as_of_date) == {AS_OF}
    assert out.weighted_amount.tolist()[:3] == [2000.0, 500.0, 100.0]
    assert out.team_id.tolist() == ["T1"] * 6 + ["T2"]


def test_each_focus_comes_with_its_question():
    questions = follow_up().drop_duplicates("focus").set_index("focus").question
    assert "who signs" in questions["closing_this_week"]
    assert "new date" in questions["past_close_date"]
    assert "introduce yourself" in questions["handed_over"]
    assert "still there" in questions["no_activity"]
    assert "stands between them" in questions["over_stage_limit"]


# the morning mails, through a real SMTP server on loopback (tests/test_digest.py's)


def follow_up_config(built, tmp_path, port: int, **digest) -> Path:
    folder, source, _ = built
    path = digest_config(folder, source, tmp_path, port)
    settings = yaml.safe_load(path.read_text(encoding="utf-8"))
    settings["digest"] |= digest
    path.write_text(yaml.safe_dump(settings, allow_unicode=True), encoding="utf-8")
    return path


def test_each_rep_gets_their_own_list_once_a_day(built, tmp_path, inbox, prefect_server):
    handler, port = inbox
    config = follow_up_config(built, tmp_path, port, follow_up_mail=True)
    warehouse = open_warehouse(yaml.safe_load(config.read_text())["warehouse"]["url"])
    lists = warehouse.query(
        "SELECT f.*, u.email FROM mart_follow_up f JOIN dim_user u ON u.user_id = f.owner_id "
        "WHERE f.as_of_date = :d ORDER BY f.owner_id, f.priority",
        {"d": BUILT_AS_OF},
    )
    assert lists.email.notna().all() and lists.owner_id.nunique() > 1

    results = morning_follow_up(config=str(config))
    assert results == dict.fromkeys(lists.email.unique(), "sent")
    assert len(handler.messages) == lists.owner_id.nunique()
    for address, deals in lists.groupby("email"):
        (mail,) = handler.to(address)
        assert mail["Message-ID"].startswith(f"<follow-up-{BUILT_AS_OF}-")
        # for the morning after the day the lists were built for
        assert mail["Subject"].startswith("To follow up today, Nov 21, 2026: ")
        assert f"{len(deals)} deal" in mail["Subject"]
        text = mail.get_body(("plain",)).get_content()
        # the rep's own deals, in the order to act, each with its question; nobody else's
        shown = re.findall(r"^\d+\. (.+)$", text, flags=re.MULTILINE)
        assert len(shown) == len(deals)
        assert all(line.startswith(name) for line, name in zip(shown, deals.name, strict=True))
        others = lists[lists.email.ne(address)].opportunity_id
        assert not any(f"/deals/{deal}" in text for deal in others)
    sent = warehouse.query("SELECT status, COUNT(*) AS n FROM follow_up_outbox GROUP BY status")
    assert sent.set_index("status").n.to_dict() == {"sent": lists.owner_id.nunique()}

    # the same morning again (a retry, a second trigger): nothing is sent twice
    again = morning_follow_up(config=str(config))
    assert set(again.values()) == {"already sent"}
    assert len(handler.messages) == lists.owner_id.nunique()


def test_no_mail_unless_turned_on_and_a_dry_run_in_chinese(built, tmp_path, inbox, prefect_server):
    handler, port = inbox
    config = follow_up_config(built, tmp_path, port, language="zh-CN")
    assert morning_follow_up(config=str(config)) == {}
    assert handler.messages == []

    out = tmp_path / "follow-ups"
    written = morning_follow_up(config=str(config), dry_run=True, out=str(out))
    assert written and all(v.startswith("written to") for v in written.values())
    assert handler.messages == []
    text = next(out.glob("*.txt")).read_text(encoding="utf-8")
    assert "今日待跟进" in text and "建议询问" in text

    # a day no run built is said so, not mistaken for a day with nothing to do
    with pytest.raises(DigestError, match="no run has built the lists of 2026-11-02"):
        morning_follow_up(config=str(config), day=date(2026, 11, 2), dry_run=True, out=str(out))
