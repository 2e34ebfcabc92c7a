"""The gate inside the nightly run: bad rows wait in dq_quarantine and load once fixed at the
source; a table failure stops the run with one line and changes nothing."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from pandas.testing import assert_frame_equal

from loudou.canonical import TABLES
from loudou.quality import Suites
from loudou.warehouse import open_warehouse
from tests.browser import dump_dom
from tests.test_nightly import failing_run, run
from tests.warehouse_helpers import assert_same_warehouse, warehouse_contents


def execute(url: str, sql: str, **params) -> list:
    with sa.create_engine(url).begin() as db:
        result = db.execute(sa.text(sql), params)
        return list(result) if result.returns_rows else []


def first_open_deal(url: str) -> str:
    return execute(
        url,
        "SELECT opportunity_id FROM crm_opportunities WHERE status = 'open' "
        "ORDER BY opportunity_id LIMIT 1",
    )[0][0]


def test_a_quarantined_row_loads_the_night_after_it_is_fixed(
    prefect_server, config, sqlite_crm, duckdb_url
):
    deal = first_open_deal(sqlite_crm)
    activity = execute(
        sqlite_crm, "SELECT activity_id FROM crm_activities ORDER BY activity_id LIMIT 1"
    )[0][0]
    history_rows = execute(
        sqlite_crm, "SELECT COUNT(*) FROM crm_stage_history WHERE opportunity_id = :o", o=deal
    )[0][0]
    # fixed later without touching updated_at: the gate reads quarantined rows by key
    execute(
        sqlite_crm, "UPDATE crm_opportunities SET amount = -5 WHERE opportunity_id = :o", o=deal
    )
    execute(
        sqlite_crm, "UPDATE crm_activities SET owner_id = 'U404' WHERE activity_id = :a", a=activity
    )

    first = run(config)
    warehouse = open_warehouse(duckdb_url)
    waiting = warehouse.query("SELECT * FROM dq_quarantine WHERE released_at IS NULL")
    reasons = dict(zip(zip(waiting.table_name, waiting.record_key), waiting.reasons))
    assert reasons[("opportunities", deal)] == (
        "amount -5.0 is negative or above quality.max_amount"
    )
    assert reasons[("activities", activity)] == "owner_id U404 is not in users"
    assert waiting.table_name.value_counts().to_dict() == {
        "opportunities": 1,
        "activities": 1,
        "stage_history": history_rows,
        **({"field_history": n} if (n := _field_history(sqlite_crm, deal)) else {}),
    }
    assert first["rows_quarantined"] == len(waiting)
    stg = warehouse.read_table("stg_opportunities")
    assert len(stg) == 499 and deal not in set(stg.opportunity_id)
    run_row = warehouse.query("SELECT * FROM etl_run")
    assert run_row.rows_quarantined.iat[0] == len(waiting)
    results = warehouse.query("SELECT * FROM dq_result WHERE run_id = :r", {"r": first["run_id"]})
    failed = results[~results.success]
    assert set(failed.expectation) == {
        "expect_column_values_to_be_between(amount)",
        "expect_column_values_to_be_null(unresolved_owner_id)",
    }
    # every check of every table is on record
    suites = Suites.load()
    assert set(results.table_name) >= set(TABLES)
    assert len(results) == sum(len(suites.checks[t]) for t in set(results.table_name))

    # still bad: it stays in quarantine, nothing else changes
    run(config)
    assert warehouse.query(
        "SELECT COUNT(*) AS n FROM dq_quarantine WHERE released_at IS NULL"
    ).n.iat[0] == len(waiting)

    execute(
        sqlite_crm, "UPDATE crm_opportunities SET amount = 5000 WHERE opportunity_id = :o", o=deal
    )
    owner = execute(sqlite_crm, "SELECT user_id FROM crm_users LIMIT 1")[0][0]
    execute(
        sqlite_crm,
        "UPDATE crm_activities SET owner_id = :u WHERE activity_id = :a",
        u=owner,
        a=activity,
    )
    third = run(config)
    assert third["rows_quarantined"] == 0
    stg = warehouse.read_table("stg_opportunities").set_index("opportunity_id")
    assert stg.at[deal, "amount"] == 5000
    loaded_history = warehouse.query(
        "SELECT COUNT(*) AS n FROM stg_stage_history WHERE opportunity_id = :o", {"o": deal}
    )
    assert loaded_history.n.iat[0] == history_rows
    assert (
        warehouse.query(
            "SELECT owner_id FROM stg_activities WHERE activity_id = :a", {"a": activity}
        ).owner_id.iat[0]
        == owner
    )
    released = warehouse.query("SELECT * FROM dq_quarantine")
    assert released.released_at.notna().all() and len(released) == len(waiting)


def _field_history(url: str, deal: str) -> int:
    return execute(url, "SELECT COUNT(*) FROM crm_field_history WHERE opportunity_id = :o", o=deal)[
        0
    ][0]


def test_a_table_failure_stops_the_run_and_changes_nothing(
    prefect_server, config, sqlite_crm, duckdb_url
):
    run(config)
    before = warehouse_contents(duckdb_url)
    warehouse = open_warehouse(duckdb_url)
    marks = warehouse.query("SELECT * FROM etl_watermark ORDER BY table_name")
    # a truncated source: the incremental run sees no deals left and must not delete them all
    execute(sqlite_crm, "DELETE FROM crm_opportunities")

    code, message = failing_run(config)

    assert code == 1 and "\n" not in message
    assert message == (
        "loudou: error: data quality: the run stopped before the load: opportunity_keys: "
        "expect_table_row_count_to_be_between failed (the source has no opportunities): "
        "0 rows"
    )
    assert_same_warehouse(before, warehouse_contents(duckdb_url))
    assert warehouse.query("SELECT * FROM etl_watermark ORDER BY table_name").equals(marks)
    runs = warehouse.query("SELECT * FROM etl_run ORDER BY started_at")
    assert list(runs.status) == ["success", "failed"]
    failed_run = runs.run_id.iat[1]
    assert runs.error.iat[1] == message.removeprefix("loudou: error: ")
    results = warehouse.query("SELECT * FROM dq_result WHERE run_id = :r", {"r": failed_run})
    assert results[~results.success].expectation.tolist() == [
        "expect_table_row_count_to_be_between"
    ]


def test_dq_docs_builds_data_docs_of_the_source(tmp_path, config, sqlite_crm):
    from typer.testing import CliRunner

    from loudou.cli import app

    execute(sqlite_crm, "UPDATE crm_opportunities SET currency = 'XXX' WHERE rowid = 1")
    out = tmp_path / "docs"
    result = CliRunner().invoke(app, ["dq", "docs", "--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    index = Path(result.stdout.strip().removeprefix("data docs: "))
    assert index.exists() and index.is_relative_to(out)
    pages = {p.parent.parent.parent.name: p for p in index.parent.glob("validations/*/*/*/*.html")}
    assert set(pages) == {
        "territories",
        "teams",
        "users",
        "accounts",
        "leads",
        "opportunities",
        "stage_history",
        "field_history",
        "activities",
        "targets",
    }
    validation = re.sub(r"<[^>]+>|\s+", " ", pages["opportunities"].read_text(encoding="utf-8"))
    assert re.search(r"Unsuccessful Expectations\s+1\b", validation)
    assert "XXX" in validation  # the unexpected value, shown as a sample
    suite = (index.parent / "expectations" / "opportunities.html").read_text(encoding="utf-8")
    assert "severity row: currency {currency!r} is not allowed (quality.currencies)" in suite
    assert_readable_offline(index)


def _deal_rows(url: str, deal: str) -> dict[str, object]:
    warehouse = open_warehouse(url)
    return {
        table: warehouse.query(
            f"SELECT * FROM {table} WHERE opportunity_id = :o ORDER BY 2", {"o": deal}
        )
        for table in ("stg_opportunities", "stg_stage_history", "fct_opportunity")
    }


def test_a_full_refresh_keeps_the_last_good_version_of_a_quarantined_deal(
    prefect_server, config, sqlite_crm, duckdb_url
):
    """As an incremental night does: the deal and its history as they were before it went
    bad stay in staging and in fct_opportunity while it waits in quarantine."""
    deal = first_open_deal(sqlite_crm)
    run(config)
    good = _deal_rows(duckdb_url, deal)
    execute(
        sqlite_crm, "UPDATE crm_opportunities SET amount = -5 WHERE opportunity_id = :o", o=deal
    )
    refreshed = run(config, full_refresh=True)
    assert refreshed["rows_quarantined"] >= 1
    kept = _deal_rows(duckdb_url, deal)
    for table, rows in good.items():
        assert len(rows) > 0
        assert_frame_equal(rows, kept[table], check_dtype=False, obj=table)
    assert open_warehouse(duckdb_url).row_count("fct_opportunity") == 500


def test_a_deal_whose_key_goes_null_is_quarantined_not_deleted(
    prefect_server, config, sqlite_crm, duckdb_url
):
    deal = first_open_deal(sqlite_crm)
    run(config)
    # a CRM connected through views has no NOT NULL on its keys
    execute(sqlite_crm, "CREATE TABLE loose AS SELECT * FROM crm_opportunities")
    execute(sqlite_crm, "DROP TABLE crm_opportunities")
    execute(sqlite_crm, "ALTER TABLE loose RENAME TO crm_opportunities")
    execute(
        sqlite_crm,
        "UPDATE crm_opportunities SET opportunity_id = NULL, updated_at = '2026-11-20 10:00:00' "
        "WHERE opportunity_id = :o",
        o=deal,
    )
    for full_refresh in (False, True):
        night = run(config, full_refresh=full_refresh)
        assert night["rows_quarantined"] >= 1
        warehouse = open_warehouse(duckdb_url)
        assert deal in set(warehouse.read_table("stg_opportunities").opportunity_id)
        assert warehouse.row_count("fct_opportunity") == 500
        waiting = warehouse.query("SELECT record_key FROM dq_quarantine WHERE released_at IS NULL")
        assert any(k.startswith("(no key)") for k in waiting.record_key)


OFFLINE_PROBE = """<script>
window.addEventListener('load', () => setTimeout(() => document.body.setAttribute(
  'data-offline', [
    typeof window.jQuery,
    typeof (window.jQuery && window.jQuery.fn.bootstrapTable),
    typeof (window.jQuery && window.jQuery.fn.modal),
    document.querySelectorAll('.bootstrap-table').length,
    [...document.querySelectorAll('link[rel=stylesheet]')].filter(l => !l.sheet).length,
    [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).length,
  ].join('|')), 1000));
</script></body>"""


def assert_readable_offline(index: Path) -> None:
    """Every script, style and image a Data Docs page loads is a file of the site, and a
    browser that can resolve no host at all still runs the pages' scripts (bootstrap-table
    builds its tables), applies every style sheet and shows every image."""
    site = index.parent
    pages = [index, next(site.glob("validations/*/*/*/*.html")), site / "expectations/users.html"]
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        loaded = re.findall(r"<(?:script|img)[^>]*\ssrc=\"([^\"]+)\"", html)
        loaded += re.findall(r"<link[^>]*\shref=\"([^\"]+)\"", html)
        assert loaded, page
        for address in loaded:
            assert "://" not in address, (page, address)
            assert (page.parent / address).resolve().is_file(), (page, address)
    for page in pages:
        probe = page.with_name(f"probe-{page.name}")
        probe.write_text(page.read_text(encoding="utf-8").replace("</body>", OFFLINE_PROBE))
        dom = dump_dom(probe, "--host-resolver-rules=MAP * ~NOTFOUND")  # no internet at all
        state = re.search(r'data-offline="([^"]+)"', dom.stdout)
        assert state, dom.stderr[-2000:]
        *scripts, tables, unstyled, broken_images = state.group(1).split("|")
        assert scripts == ["function"] * 3, (page, scripts)  # jQuery, bootstrap-table, Bootstrap
        assert (unstyled, broken_images) == ("0", "0"), page
        assert int(tables) >= 1, page
