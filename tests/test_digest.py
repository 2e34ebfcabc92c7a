"""The weekly digest through a real SMTP server on loopback, and in a real headless Chromium."""

from __future__ import annotations

import copy
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from flows.digest import weekly_digest
from loudou.digest import DigestError, latest_as_of
from loudou.simulator import write_crm
from loudou.warehouse import open_warehouse
from tests.browser import dump_dom, screenshot
from tests.conftest import AS_OF, ROOT, XSS, Inbox, digest_config, free_port

WEEK = date(2026, 11, 16)  # the Monday of AS_OF's week
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture
def config(built, tmp_path, inbox, prefect_server):
    folder, source, _ = built
    return digest_config(folder, source, tmp_path, inbox[1])


@pytest.fixture(scope="module")
def merged_teams(tmp_path_factory, small_crm):
    """A CRM where team T0002's reps joined T0001: a team of over 200 deals, and T0002 with
    its manager and no deal left."""
    crm = copy.deepcopy(small_crm)
    users = crm.tables["users"]
    reps = users.team_id.eq("T0002") & users.user_id.ne("U00003")
    users.loc[reps, ["team_id", "manager_id"]] = ["T0001", "U00002"]
    folder = tmp_path_factory.mktemp("merged")
    source = f"sqlite:///{folder / 'crm.sqlite'}"
    write_crm(crm, source)
    return folder, source


def team_members(url: str) -> pd.DataFrame:
    return open_warehouse(url).query("SELECT user_id, name, email, team_id FROM dim_user")


def warehouse_url(config: Path) -> str:
    return f"duckdb:///{config.parent / 'warehouse.duckdb'}"


def test_every_manager_and_the_director_get_a_well_formed_digest(config, inbox):
    handler, _ = inbox
    results = weekly_digest(config=str(config), week_start=WEEK)
    managers = open_warehouse(warehouse_url(config)).query(
        "SELECT u.email, t.name FROM dim_team t JOIN dim_user u ON u.user_id = t.manager_id"
    )
    assert set(results) == set(managers.email) | {"u00001@loudou-demo.cn"}
    assert set(results.values()) == {"sent"}
    assert len(handler.messages) == len(results)
    for manager in managers.itertuples():
        [message] = handler.to(manager.email)
        assert message["Subject"] == f"Pipeline digest, week of Nov 16, 2026: {manager.name}"
        assert message["From"] == "loudou 漏斗 <loudou@example.com>"
        assert message["Message-ID"].endswith("@example.com>")
        assert message["Date"].endswith("+0800")  # Asia/Shanghai, the reporting zone
        assert message.get_content_type() == "multipart/alternative"
        text, related = message.get_payload()
        assert text.get_content_type() == "text/plain"
        assert related.get_content_type() == "multipart/related"
        html_part, *images = related.get_payload()
        html = html_part.get_content()
        cids = set(re.findall(r'src="cid:([^"]+)"', html))
        assert cids == {"funnel", "movement"}
        assert {i["Content-ID"].strip("<>") for i in images} == cids
        assert {i.get_content_disposition() for i in images} == {"inline"}
        assert all(
            i.get_content_type() == "image/png" and i.get_content()[:4] == b"\x89PNG"
            for i in images
        )
        assert "style=" in html and "<style" not in html.split("</head>")[1]  # CSS inlined
        assert "Stalled deals to question" in text.get_content()

    # the director reads how good the month's forecast has been: from the first night, on
    # the months replayed from history (each read on the month's first day)
    scored = open_warehouse(warehouse_url(config)).query(
        "SELECT accuracy FROM mart_forecast_accuracy WHERE scope_kind = 'company' "
        "AND method = 'monte_carlo' AND period_kind = 'month' AND origin = 'backtest' "
        "AND forecast_as_of = period_start AND accuracy IS NOT NULL"
    )
    [director] = handler.to("u00001@loudou-demo.cn")
    text = director.get_payload()[0].get_content()
    expected = f"Accuracy {scored.accuracy.mean():.0%} (closed months: {len(scored)})"
    assert f"{expected} replayed from history" in text


def test_each_manager_sees_only_their_own_team_and_its_public_pool(config, inbox):
    handler, _ = inbox
    weekly_digest(config=str(config), week_start=WEEK)
    warehouse = open_warehouse(warehouse_url(config))
    users = team_members(warehouse_url(config))
    deals = warehouse.query(
        "SELECT o.name AS deal, a.name AS account, o.owner_id FROM "
        "fct_opportunity o JOIN dim_account a USING (account_id)"
    )
    deals["team_id"] = deals.owner_id.map(users.set_index("user_id").team_id)
    accounts = warehouse.query("SELECT name, owner_id FROM dim_account")
    teams = warehouse.query("SELECT team_id, manager_id FROM dim_team")
    checked = 0
    for team in teams.itertuples():
        manager = users.set_index("user_id").loc[team.manager_id]
        [message] = handler.to(manager.email)
        body = (
            message.get_body(("plain",)).get_content() + message.get_body(("html",)).get_content()
        )
        ours = users[users.team_id == team.team_id]
        # the team's accounts: those of its deals, and those its reps own (the public pool)
        own_accounts = accounts[accounts.owner_id.isin(ours.user_id)].name
        ours_text = " ".join(ours.name) + " ".join(deals[deals.team_id == team.team_id].account)
        ours_text += " ".join(own_accounts)
        for other in users[(users.team_id != team.team_id) & users.team_id.notna()].itertuples():
            if other.name not in ours_text and (users.name == other.name).sum() == 1:
                assert other.name not in body, (team.team_id, other.name)
                checked += 1
        for deal in deals[(deals.team_id != team.team_id) & deals.team_id.notna()].itertuples():
            assert deal.deal not in body, (team.team_id, deal.deal)
            if not any(
                deal.account.strip() in a or a.strip() in deal.account
                for a in [*deals[deals.team_id == team.team_id].account, *own_accounts]
            ):
                assert deal.account.strip() not in body, (team.team_id, deal.account)
    assert checked > 20
    assert_each_team_lists_its_public_pool(config, handler)


def assert_each_team_lists_its_public_pool(config: Path, handler: Inbox) -> None:
    """Each manager's digest lists the team's accounts of mart_public_pool, most at stake
    first, up to digest.top_n (10) and 'and N more'."""
    url = warehouse_url(config)
    warehouse = open_warehouse(url)
    as_of = latest_as_of(warehouse, WEEK + pd.Timedelta(days=6))
    pool = warehouse.query(
        "SELECT * FROM mart_public_pool WHERE as_of_date = :d "
        "ORDER BY open_amount DESC, days_idle DESC, account_id",
        {"d": as_of},
    )
    users = team_members(url).set_index("user_id")
    pool["team_id"] = pool.owner_id.map(users.team_id)
    teams = warehouse.query("SELECT team_id, manager_id FROM dim_team")
    listed = 0
    for team in teams.itertuples():
        [message] = handler.to(users.loc[team.manager_id, "email"])
        text = message.get_body(("plain",)).get_content()
        ours = pool[pool.team_id.eq(team.team_id)]
        assert ("Accounts for the public pool" in text) == (len(ours) > 0), team.team_id
        for row in ours.head(10).itertuples():
            # a line of its own: "- <account> (<owner>): <n> days idle[, <amount> (<deals>)]"
            line = re.search(rf"^- {re.escape(row.account_name.strip())} \(.*$", text, re.M)
            assert line and f"): {row.days_idle} days idle" in line.group(0), row.account_name
            listed += 1
        if len(ours) > 10:
            assert f"and {len(ours) - 10} more" in text
    assert listed > 0


def test_account_names_are_escaped_in_html_and_intact_in_text(config, inbox, built):
    handler, _ = inbox
    weekly_digest(config=str(config), week_start=WEEK)
    bodies = [
        (m.get_body(("html",)).get_content(), m.get_body(("plain",)).get_content())
        for m in handler.messages
    ]
    showing = [(html, text) for html, text in bodies if "alert(1)" in text]
    assert showing, "the stalled deal of the renamed account is listed somewhere"
    for html, text in showing:
        assert XSS in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and XSS not in html


def test_a_rerun_sends_nothing_new(config, inbox):
    handler, _ = inbox
    first = weekly_digest(config=str(config), week_start=WEEK)
    sent = len(handler.messages)
    again = weekly_digest(config=str(config), week_start=WEEK)
    assert set(again.values()) == {"already sent"} and set(again) == set(first)
    assert len(handler.messages) == sent
    outbox = open_warehouse(warehouse_url(config)).read_table("digest_outbox")
    assert set(outbox.status) == {"sent"} and outbox.message_id.notna().all()


def test_an_smtp_outage_half_way_then_a_rerun_delivers_each_digest_exactly_once(config, inbox):
    handler, _ = inbox
    handler.fail_after = 3
    with pytest.raises(DigestError, match=r"digest: \d+ of \d+ digests not delivered"):
        weekly_digest(config=str(config), week_start=WEEK)
    outbox = open_warehouse(warehouse_url(config)).read_table("digest_outbox")
    assert (outbox.status == "sent").sum() == 3
    failed = outbox[outbox.status == "failed"]
    assert len(failed) and failed.last_error.str.contains("451 4.3.0 try again later").all()
    assert failed.sent_at.isna().all()
    handler.fail_after = None
    results = weekly_digest(config=str(config), week_start=WEEK)
    assert sorted(set(results.values())) == ["already sent", "sent"]
    recipients = [m["To"].addresses[0].addr_spec for m in handler.messages]
    assert len(recipients) == len(set(recipients)) == len(results)


def test_a_missing_address_and_a_refused_recipient_fail_alone(config, inbox):
    handler, _ = inbox
    warehouse = open_warehouse(warehouse_url(config))
    managers = warehouse.query("SELECT manager_id FROM dim_team ORDER BY team_id").manager_id
    duck = __import__("duckdb").connect(warehouse_url(config).split(":///")[1])
    duck.execute("UPDATE dim_user SET email = NULL WHERE user_id = ?", [managers.iat[0]])
    refused = duck.execute(
        "SELECT email FROM dim_user WHERE user_id = ?", [managers.iat[1]]
    ).fetchone()[0]
    duck.close()
    handler.refuse = {refused}
    with pytest.raises(DigestError, match="2 of"):
        weekly_digest(config=str(config), week_start=WEEK)
    outbox = warehouse.read_table("digest_outbox").set_index("recipient")
    assert outbox.loc[f"(no e-mail: {managers.iat[0]})", "last_error"].startswith(
        "no e-mail address for"
    )
    assert "550 5.1.1 mailbox unavailable" in outbox.loc[refused, "last_error"]
    assert (outbox.status == "sent").sum() == len(outbox) - 2
    assert len(handler.messages) == len(outbox) - 2


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_chromium_renders_the_digest_with_every_image(config, tmp_path, language):
    text = config.read_text(encoding="utf-8").replace("language: en", f"language: {language}")
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    weekly_digest(config=str(config), week_start=WEEK, dry_run=True, out=str(out))
    page = next(p for p in out.glob("*.html") if not p.name.startswith("u00001"))
    html = page.read_text(encoding="utf-8")
    assert html.count('<img class="chart"') == 2 or html.count("<img") >= 2
    probe = page.with_name("probe.html")
    probe.write_text(
        html.replace(
            "</body>",
            (
                "<script>window.addEventListener('load', () => document.body.setAttribute("
                "'data-images', [...document.images].filter(i => i.complete && i.naturalWidth > 0)"
                ".length + '/' + document.images.length));</script></body>"
            ),
        ),
        encoding="utf-8",
    )
    dom = dump_dom(probe, "--window-size=600,2400")
    loaded = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert loaded, dom.stderr[-2000:]
    assert loaded.group(1) == loaded.group(2) and int(loaded.group(2)) >= 2
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"digest-{language}.png"
    screenshot(page, shot, "--window-size=600,2400")
    assert shot.stat().st_size > 20_000


def test_an_address_with_a_line_break_fails_that_recipient_alone(config, inbox):
    handler, _ = inbox
    warehouse = open_warehouse(warehouse_url(config))
    manager = warehouse.query("SELECT manager_id FROM dim_team ORDER BY team_id").manager_id.iat[0]
    duck = __import__("duckdb").connect(warehouse_url(config).split(":///")[1])
    duck.execute(
        "UPDATE dim_user SET email = email || chr(13) || chr(10) || 'Bcc: x@evil.example' "
        "WHERE user_id = ?",
        [manager],
    )
    duck.close()
    with pytest.raises(DigestError, match=r"1 of \d+ digests not delivered.*bad e-mail address"):
        weekly_digest(config=str(config), week_start=WEEK)
    outbox = open_warehouse(warehouse_url(config)).read_table("digest_outbox")
    failed = outbox[outbox.status.eq("failed")]
    assert len(failed) == 1 and manager in failed.last_error.iat[0]
    assert (outbox.status == "sent").sum() == len(outbox) - 1 == len(handler.messages)


def test_an_unreachable_smtp_server_gives_up_after_a_few_recipients(config):
    """Nobody listens on the port: three recipients in a row fail, the run stops with one
    line, and the outbox keeps the rest for the next run."""
    text = config.read_text(encoding="utf-8")
    config.write_text(re.sub(r"port: \d+", f"port: {free_port()}", text), encoding="utf-8")
    with pytest.raises(DigestError, match=r"gave up: .* for 3 recipients in a row; \d+ more"):
        weekly_digest(config=str(config), week_start=WEEK)
    outbox = open_warehouse(warehouse_url(config)).read_table("digest_outbox")
    assert len(outbox) == 3 and set(outbox.status) == {"failed"}


def test_the_digest_week_is_the_latest_whole_week_held_or_one_line_with_the_backfill(tmp_path):
    from flows.digest import pick_week
    from loudou.warehouse import Write

    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    warehouse.ensure_schema()

    def built(*days: str) -> None:
        rows = pd.DataFrame({"as_of_date": pd.to_datetime(list(days)), "scope_kind": "company"})
        warehouse.apply([Write("mart_funnel", rows, replace="all")])

    today = date(2026, 12, 3)  # a Thursday
    with pytest.raises(DigestError, match="no nightly run has built the marts yet"):
        pick_week(warehouse, "loudou.yaml", None, today)
    # the newest day is Wednesday 2 December: the last whole week ended on Sunday 29 November
    built("2026-11-23", "2026-11-29", "2026-12-02")
    assert pick_week(warehouse, "loudou.yaml", None, today) == date(2026, 11, 23)
    # only Wednesday built: the week before lacks its days, and the line says how to build them
    built("2026-12-02")
    with pytest.raises(DigestError) as missing:
        pick_week(warehouse, "c/loudou.yaml", None, today)
    assert str(missing.value) == (
        "digest: the week of 2026-11-23 has no marts for 2026-11-23 to 2026-11-29 (7 days): "
        "build them with `loudou backfill --config c/loudou.yaml --start 2026-11-23 "
        "--end 2026-11-29`"
    )
    # a week the newest marts fall in goes as far as they go; a week not over is refused
    built("2026-11-20")
    assert pick_week(warehouse, "loudou.yaml", date(2026, 11, 16), today) == date(2026, 11, 16)
    with pytest.raises(DigestError, match=r"--week 2026-11-30: the week ends on 2026-12-06"):
        pick_week(warehouse, "loudou.yaml", date(2026, 11, 30), today)


FITS_PROBE = (
    "<script>window.addEventListener('load', () => document.body.setAttribute('data-fits', "
    "document.documentElement.scrollWidth <= window.innerWidth ? 'yes' : "
    "document.documentElement.scrollWidth + '>' + window.innerWidth));</script></body>"
)


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_every_digest_fits_a_phone_and_a_desktop_without_sideways_scrolling(
    merged_teams, tmp_path, inbox, prefect_server, language
):
    """Each team's digest (one of over 200 deals, one with no deal, as the nightly built
    them from the CRM) and the director's, at 390 px (a phone) and 1200 px, in headless
    Chromium."""
    config = digest_config(*merged_teams, tmp_path, inbox[1])
    text = config.read_text(encoding="utf-8").replace("language: en", f"language: {language}")
    config.write_text(text, encoding="utf-8")
    duck = __import__("duckdb").connect(warehouse_url(config).split(":///")[1], read_only=True)
    deals = dict(
        duck.execute(
            "SELECT t.team_id, COUNT(o.opportunity_id) FROM dim_team t "
            "LEFT JOIN dim_user u ON u.team_id = t.team_id "
            "LEFT JOIN fct_opportunity o ON o.owner_id = u.user_id GROUP BY t.team_id"
        ).fetchall()
    )
    duck.close()
    assert deals["T0001"] >= 200 and deals["T0002"] == 0
    out = tmp_path / "out"
    written = weekly_digest(config=str(config), week_start=WEEK, dry_run=True, out=str(out))
    assert "u00003@loudou-demo.cn" in written and "u00001@loudou-demo.cn" in written
    for page in sorted(out.glob("*.html")):
        probe = page.with_name(f"probe-{page.name}")
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", FITS_PROBE))
        for width in (390, 1200):
            dom = dump_dom(
                probe, "--hide-scrollbars", f"--window-size={width},2000", budget_ms=3000
            )
            fits = re.search(r'data-fits="([^"]+)"', dom.stdout)
            assert fits, dom.stderr[-2000:]
            assert fits.group(1) == "yes", (page.name, width, fits.group(1))


def test_a_stalled_deal_shows_what_a_manager_acts_on_and_long_lists_say_how_many_more(
    config, tmp_path
):
    text = config.read_text(encoding="utf-8").replace("top_n: 10", "top_n: 1")
    config.write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    weekly_digest(config=str(config), week_start=WEEK, dry_run=True, out=str(out))
    director = (out / "u00001_loudou-demo.cn.txt").read_text(encoding="utf-8")
    stalled = (
        open_warehouse(warehouse_url(config))
        .query("SELECT COUNT(*) AS n FROM mart_stalled_deals WHERE as_of_date = :d", {"d": AS_OF})
        .n.iat[0]
    )
    assert stalled > 1
    assert f"and {stalled - 1} more" in director
    [line] = [x for x in director.splitlines() if "Days in stage" in x]
    assert "close date" in line and "no activity for" in line and "¥" in line
    html = (out / "u00001_loudou-demo.cn.html").read_text(encoding="utf-8")
    assert "coefficient of variation" in html
    assert re.search(r"\b1 deal\b|\b\d+ deals\b", director)
    png = next(out.glob("u00001*-funnel.png")).read_bytes()
    assert int.from_bytes(png[16:20], "big") == 1120  # drawn at 2x, shown at 560 px


def test_the_stale_data_warning_follows_the_nightly_schedule():
    from flows.digest import expected_newest_day

    now = pd.Timestamp("2026-12-03 01:30", tz="Asia/Shanghai")  # before tonight's 02:00 run
    assert expected_newest_day("0 2 * * *", "Asia/Shanghai", now) == date(2026, 12, 1)
    later = pd.Timestamp("2026-12-03 07:00", tz="Asia/Shanghai")
    assert expected_newest_day("0 2 * * *", "Asia/Shanghai", later) == date(2026, 12, 2)


def test_a_crm_that_keeps_no_close_date_history_says_so_instead_of_a_clean_record(config, tmp_path):
    """Odoo does not track date_deadline: the digest says pushes cannot be seen there."""
    native, odoo = tmp_path / "native", tmp_path / "odoo"
    weekly_digest(config=str(config), week_start=WEEK, dry_run=True, out=str(native))
    text = config.read_text(encoding="utf-8")
    assert "kind: native" in text
    config.write_text(text.replace("kind: native", "kind: odoo"), encoding="utf-8")
    weekly_digest(config=str(config), week_start=WEEK, dry_run=True, out=str(odoo))
    note = "does not record changes of the expected close date"
    assert note not in (native / "u00001_loudou-demo.cn.txt").read_text(encoding="utf-8")
    assert note in (odoo / "u00001_loudou-demo.cn.txt").read_text(encoding="utf-8")
    assert note in (odoo / "u00001_loudou-demo.cn.html").read_text(encoding="utf-8")
