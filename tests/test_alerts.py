"""Conversion alerts: which flags of mart_stage_conversion are raised (hand-made rows, worked
out below), and their once-only delivery by mail and webhook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import urllib.parse
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import yaml

from flows.alerts import conversion_alerts
from loudou.alerts import in_quiet_hours
from loudou.digest import DigestError
from loudou.warehouse import Write, open_warehouse
from tests.conftest import AS_OF as BUILT_AS_OF
from tests.conftest import digest_config
from tests.fixtures import STAGES
from tests.warehouse_helpers import built_by_sql

T = pd.Timestamp
WEEK = T("2026-11-09")  # the last whole week before 18 to 22 November (Wednesday to Sunday)

# as_of_date, scope_kind, scope_id, stage, flag (anomaly, bottleneck or none), and what else
# makes a row unwatched: another period, funnel, cut or scope kind
ROWS = [
    ("2026-11-18", "team", "T1", "发现机会", "anomaly", {}),
    ("2026-11-18", "team", "T1", "明确需求", "bottleneck", {}),
    ("2026-11-18", "company", "all", "发现机会", "bottleneck", {}),
    ("2026-11-19", "team", "T1", "发现机会", "anomaly", {}),  # persists: not raised again
    ("2026-11-19", "team", "T1", "明确需求", "none", {}),  # cleared
    ("2026-11-19", "team", "T2", "发现机会", "bottleneck", {}),  # new: raised
    ("2026-11-19", "company", "all", "发现机会", "bottleneck", {}),  # persists
    ("2026-11-19", "team", "T2", "购买决策", "anomaly", {"period_start": T("2026-11-16")}),
    ("2026-11-19", "team", "T2", "购买决策", "anomaly", {"funnel": "strict"}),
    ("2026-11-19", "team", "T2", "购买决策", "anomaly", {"dimension": "lead_source"}),
    ("2026-11-19", "user", "U1", "购买决策", "anomaly", {}),
    ("2026-11-20", "team", "T1", "明确需求", "bottleneck", {}),  # back after clearing: raised
    ("2026-11-20", "team", "T1", "发现机会", "anomaly", {}),  # persists
    # Monday 23 November watches the week of 16 November; a flag that went on from the week
    # before is not raised again
    ("2026-11-23", "team", "T1", "发现机会", "anomaly", {"period_start": T("2026-11-16")}),
]


def conversion_rows() -> pd.DataFrame:
    rows = []
    for day, kind, scope, stage, flag, other in ROWS:
        rows.append(
            {
                "as_of_date": T(day),
                "period_kind": "week",
                "period_start": WEEK,
                "scope_kind": kind,
                "scope_id": scope,
                "dimension": "all",
                "dimension_value": "all",
                "funnel": "any_stage",
                "pipeline": "default",
                "stage": stage,
                "entered": 20,
                "advanced": 4,
                "lost": 12,
                "conversion_rate": 0.25,
                "change_vs_previous": -0.3,
                "benchmark_rate": 0.5,
                "p_value": 0.01,
                "is_anomaly": flag == "anomaly",
                "is_bottleneck": flag == "bottleneck",
            }
            | other
        )
    return pd.DataFrame(rows)


def alerts(day: str) -> pd.DataFrame:
    inputs = {"mart_stage_conversion": conversion_rows()}
    out = built_by_sql("mart_conversion_alert", inputs, stages=STAGES, as_of=T(day).date())
    return out.sort_values(["scope_kind", "scope_id", "stage", "kind"], ignore_index=True)


def flags(out: pd.DataFrame) -> list[tuple]:
    return list(out[["scope_id", "stage", "kind", "raised"]].itertuples(index=False, name=None))


def test_the_first_day_raises_every_watched_flag():
    out = alerts("2026-11-18")
    assert flags(out) == [
        ("all", "发现机会", "bottleneck", True),
        ("T1", "发现机会", "anomaly", True),
        ("T1", "明确需求", "bottleneck", True),
    ]
    assert (out.period_start == WEEK).all()
    assert out.previous_rate.tolist() == [0.55] * 3  # 0.25 - (-0.3)


def test_a_flag_is_raised_once_until_it_clears():
    # 19 November: the persisting flags stay, unraised; T2's is new; the rows of another
    # week, funnel, cut or a rep's scope are not watched
    assert flags(alerts("2026-11-19")) == [
        ("all", "发现机会", "bottleneck", False),
        ("T1", "发现机会", "anomaly", False),
        ("T2", "发现机会", "bottleneck", True),
    ]
    # 20 November: T1's bottleneck at 明确需求 cleared on the 19th and is back: raised again
    assert flags(alerts("2026-11-20")) == [
        ("T1", "发现机会", "anomaly", False),
        ("T1", "明确需求", "bottleneck", True),
    ]
    # Monday 23 November watches the next week; the anomaly went on across it: not raised
    assert flags(alerts("2026-11-23")) == [("T1", "发现机会", "anomaly", False)]


class ChatServer:
    """A chat's incoming webhook on loopback: keeps each POST (path, query, JSON body);
    answers with `status`, and checks a DingTalk signature as DingTalk does when `secret`."""

    def __init__(self, secret: str | None = None):
        self.posts: list[tuple[str, dict[str, list[str]], dict]] = []
        self.status = 200
        self.secret = secret
        chat = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                ok = chat.status == 200 and chat.signed(query)
                if ok:
                    chat.posts.append((url.path, query, body))
                self.send_response(chat.status if chat.signed(query) else 403)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"errcode": 0 if ok else 310000}).encode())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/robot/send?access_token=t0k"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def signed(self, query: dict[str, list[str]]) -> bool:
        if self.secret is None:
            return True
        timestamp, sign = query["timestamp"][0], query["sign"][0]
        expected = hmac.new(
            self.secret.encode(), f"{timestamp}\n{self.secret}".encode(), hashlib.sha256
        ).digest()
        return base64.b64decode(sign) == expected


@pytest.fixture
def chat():
    server = ChatServer()
    yield server
    server.server.shutdown()


AS_OF_WEEK = BUILT_AS_OF - timedelta(days=BUILT_AS_OF.weekday() + 7)  # the last whole week


def alert_config(built, tmp_path, port: int, **alerts) -> Path:
    folder, source, _ = built
    config = digest_config(folder, source, tmp_path, port)
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["alerts"] = {"conversion": True, **alerts}
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return config


def lost_in_the_week(url: str) -> pd.DataFrame:
    """The stays lost in the last whole week (Asia/Shanghai), with their deal's team."""
    start = T(AS_OF_WEEK) - pd.Timedelta(hours=8)
    return open_warehouse(url).query(
        "SELECT i.stage, o.name, u.team_id FROM fct_stage_interval i "
        "JOIN fct_opportunity o USING (opportunity_id) JOIN dim_user u ON u.user_id = o.owner_id "
        "WHERE i.exit_kind = 'lost' AND i.entered_at >= :s AND i.entered_at < :e",
        {"s": start, "e": start + pd.Timedelta(days=7)},
    )


def raise_flags(url: str, lost: pd.DataFrame) -> tuple[str, str]:
    """The night's alerts as if mart_stage_conversion had flagged them: the team and stage
    with most deals lost in the week (raised, to its manager), the company at the same stage
    (raised, to the director), and another team's flag that persists (not raised)."""
    team, stage = lost.groupby(["team_id", "stage"]).size().idxmax()
    other = sorted(set(lost.team_id) - {team})[0]
    rows = pd.DataFrame(
        [
            ("team", team, stage, "bottleneck", True),
            ("company", "all", stage, "anomaly", True),
            ("team", other, stage, "bottleneck", False),
        ],
        columns=["scope_kind", "scope_id", "stage", "kind", "raised"],
    ).assign(
        as_of_date=T(BUILT_AS_OF),
        pipeline="default",
        period_start=T(AS_OF_WEEK),
        entered=30,
        advanced=3,
        lost=12,
        conversion_rate=0.2,
        previous_rate=0.55,
        benchmark_rate=0.5,
        p_value=0.004,
    )
    open_warehouse(url).apply([Write("mart_conversion_alert", rows)])
    return team, stage


def manager_of(url: str, team: str) -> str:
    return (
        open_warehouse(url)
        .query(
            "SELECT u.email FROM dim_team t JOIN dim_user u ON u.user_id = t.manager_id "
            "WHERE t.team_id = :t",
            {"t": team},
        )
        .email.iat[0]
    )


MORNING = datetime(2026, 11, 21, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai"))


def test_each_manager_gets_the_alerts_raised_in_their_scope_once_and_the_chat_once(
    built, tmp_path, inbox, chat, prefect_server
):
    handler, port = inbox
    config = alert_config(built, tmp_path, port, webhook={"kind": "slack", "url": chat.url})
    url = f"duckdb:///{config.parent / 'warehouse.duckdb'}"
    lost = lost_in_the_week(url)
    team, stage = raise_flags(url, lost)
    manager = manager_of(url, team)

    results = conversion_alerts(config=str(config), now=MORNING)
    director = "u00001@loudou-demo.cn"
    assert results == {manager: "sent", director: "sent", "webhook:slack": "sent"}
    [mail] = handler.to(manager)
    text = mail.get_payload()[0].get_content()
    assert mail["Subject"] == "Conversion alert: 1 new in the week of Nov 9, 2026"
    assert f"{stage}: is a bottleneck: below the benchmark" in text
    assert "Week of Nov 9, 2026: 20% advanced (3 of 15 decided)" in text
    assert "Week of Nov 2, 2026: 55%" in text and "Benchmark: 50%, p = 0.004" in text
    # the deals behind it: the team's deals lost at that stage that week, and no other's
    behind = lost[lost.team_id.eq(team) & lost.stage.eq(stage)].name
    assert all(f"- {name}," in text for name in behind.head(5))
    others = lost[lost.team_id.ne(team) & lost.stage.eq(stage)].name
    assert not any(f"- {name}," in text for name in set(others) - set(behind))
    [to_director] = handler.to(director)
    assert "the company" in to_director.get_payload()[0].get_content()
    assert len(handler.messages) == 2  # the persisting flag's team gets nothing
    [(_, query, body)] = chat.posts
    assert query == {"access_token": ["t0k"]} and stage in body["text"]

    # a rerun sends nothing again, by mail or to the chat
    again = conversion_alerts(config=str(config), now=MORNING)
    assert set(again.values()) == {"already sent"}
    assert len(handler.messages) == 2 and len(chat.posts) == 1


def test_alerts_raised_in_quiet_hours_wait_and_a_failed_chat_post_is_retried_alone(
    built, tmp_path, inbox, prefect_server
):
    handler, port = inbox
    chat = ChatServer(secret="SEC-robot")
    try:
        config = alert_config(
            built,
            tmp_path,
            port,
            webhook={"kind": "dingtalk", "url": chat.url, "secret_env": "LOUDOU_TEST_DING"},
        )
        url = f"duckdb:///{config.parent / 'warehouse.duckdb'}"
        raise_flags(url, lost_in_the_week(url))
        os.environ["LOUDOU_TEST_DING"] = "SEC-robot"
        night = MORNING.replace(hour=23)
        assert conversion_alerts(config=str(config), now=night) == {}
        assert handler.messages == [] and chat.posts == []

        chat.status = 500  # the chat is down in the morning: the mails go, the post waits
        with pytest.raises(DigestError, match=r"not delivered .*webhook:dingtalk") as failed:
            conversion_alerts(config=str(config), now=MORNING)
        assert "HTTP 500" in str(failed.value) and "t0k" not in str(failed.value)
        assert len(handler.messages) == 2 and chat.posts == []
        chat.status = 200
        results = conversion_alerts(config=str(config), now=MORNING)
        assert results["webhook:dingtalk"] == "sent"
        assert len(handler.messages) == 2  # not mailed twice
        [(_, query, body)] = chat.posts  # signed as DingTalk checks it
        assert set(query) == {"access_token", "timestamp", "sign"}
        assert body["msgtype"] == "markdown" and "Conversion alert" in body["markdown"]["title"]
    finally:
        os.environ.pop("LOUDOU_TEST_DING", None)
        chat.server.shutdown()


def test_quiet_hours_run_over_midnight():
    assert in_quiet_hours(datetime(2026, 1, 1, 23, 0), "22:00-08:00")
    assert in_quiet_hours(datetime(2026, 1, 1, 7, 59), "22:00-08:00")
    assert not in_quiet_hours(datetime(2026, 1, 1, 8, 0), "22:00-08:00")
    assert in_quiet_hours(datetime(2026, 1, 1, 13, 0), "12:00-14:00")
    assert not in_quiet_hours(datetime(2026, 1, 1, 13, 0), None)
