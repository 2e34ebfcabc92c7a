"""The nightly flow: incremental, idempotent, atomic, on DuckDB and PostgreSQL warehouses."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from prefect.settings import get_current_settings
from typer.testing import CliRunner

from flows.nightly import nightly
from flows.tasks import SPOOL_PREFIX, RunPlan, backtest, read_state
from loudou.catalog import CURRENT_STATE_TABLES, SLICE_TABLES
from loudou.cli import app
from loudou.config import load_settings
from loudou.errors import WarehouseError
from loudou.simulator import write_crm
from loudou.warehouse import open_warehouse
from tests.conftest import AS_OF, MYSQL_ADMIN, ROOT, SIM_NOW, write_config
from tests.warehouse_helpers import (
    DATA_TABLES,
    assert_same_warehouse,
    normalised,
    warehouse_contents,
)
from transforms.forecast import backtest_moments

LATER = SIM_NOW + timedelta(hours=3)


def run(config: Path, **kwargs) -> dict:
    return nightly(config=str(config), as_of=AS_OF, **kwargs)


def change_source(url: str) -> dict[str, list[str]]:
    """Three deals advance, one is new, one is hard-deleted and one soft-deleted."""
    engine = sa.create_engine(url)
    with engine.begin() as db:
        ids = [
            r[0]
            for r in db.execute(
                sa.text(
                    "SELECT opportunity_id FROM crm_opportunities WHERE status = 'open' "
                    "AND stage = '待沟通' ORDER BY opportunity_id LIMIT 6"
                )
            )
        ]
        advanced, (removed, soft_deleted) = ids[:3], ids[3:5]
        for opp in advanced:
            db.execute(
                sa.text(
                    "UPDATE crm_opportunities SET stage = '发现机会', amount = 12345, "
                    "updated_at = :t WHERE opportunity_id = :o"
                ),
                {"t": LATER, "o": opp},
            )
            db.execute(
                sa.text(
                    "INSERT INTO crm_stage_history VALUES (:o, :t, '发现机会', '待沟通', 'U00001')"
                ),
                {"t": LATER, "o": opp},
            )
        db.execute(
            sa.text(
                "INSERT INTO crm_opportunities (opportunity_id, name, account_id, owner_id, "
                "pipeline, stage, status, amount, currency, created_at, updated_at, is_deleted) "
                "VALUES ('O9999999', '新项目', 'A0000001', 'U00011', 'default', '待沟通', 'open', "
                "5000, 'CNY', :t, :t, false)"
            ),
            {"t": LATER},
        )
        for table in ("stage_history", "field_history", "activities", "opportunities"):
            db.execute(
                sa.text(f"DELETE FROM crm_{table} WHERE opportunity_id = :o"), {"o": removed}
            )
        db.execute(
            sa.text(
                "UPDATE crm_opportunities SET is_deleted = true, updated_at = :t "
                "WHERE opportunity_id = :o"
            ),
            {"t": LATER, "o": soft_deleted},
        )
    engine.dispose()
    return {"advanced": advanced, "removed": [removed], "soft_deleted": [soft_deleted]}


def test_incremental_run_picks_up_exactly_the_changed_rows(
    prefect_server, config, sqlite_crm, duckdb_url, tmp_path
):
    first = run(config)
    assert first["mode"] == "full refresh"
    assert first["extracted"]["opportunities"] == 500
    changed = change_source(sqlite_crm)

    second = run(config)
    assert second["mode"] == "incremental"
    assert second["extracted"]["opportunities"] == 5  # 3 advanced + 1 new + 1 soft-deleted
    facts = open_warehouse(duckdb_url).read_table("fct_opportunity").set_index("opportunity_id")
    assert (facts.loc[changed["advanced"], "stage"] == "发现机会").all()
    assert (facts.loc[changed["advanced"], "amount"] == 12345).all()
    assert "O9999999" in facts.index
    assert not facts.index.isin(changed["removed"] + changed["soft_deleted"]).any()

    # the incremental warehouse equals a full refresh of the same source
    fresh_url = f"duckdb:///{tmp_path / 'fresh.duckdb'}"
    (tmp_path / "fresh").mkdir()
    run(write_config(tmp_path / "fresh", sqlite_crm, fresh_url), full_refresh=True)
    incremental, full = warehouse_contents(duckdb_url), warehouse_contents(fresh_url)
    # watermarks differ by design: the full refresh ran later
    for contents in (incremental, full):
        contents.pop("etl_watermark")
    assert_same_warehouse(incremental, full)


def test_history_extracted_incrementally_belongs_to_changed_deals_only(
    prefect_server, config, sqlite_crm
):
    run(config)
    changed = change_source(sqlite_crm)
    second = run(config)
    extracted_ids = [*changed["advanced"], *changed["soft_deleted"], "O9999999"]
    engine = sa.create_engine(sqlite_crm)
    with engine.connect() as db:
        expected = db.execute(
            sa.text(
                "SELECT COUNT(*) FROM crm_stage_history WHERE opportunity_id IN "
                f"({', '.join(repr(o) for o in extracted_ids)})"
            )
        ).scalar()
    assert second["extracted"]["stage_history"] == expected


def test_two_identical_runs_leave_identical_warehouses(prefect_server, config, duckdb_url):
    run(config, full_refresh=True)
    once = warehouse_contents(duckdb_url)
    run(config, full_refresh=True)
    assert_same_warehouse(once, warehouse_contents(duckdb_url))
    run(config)  # an incremental run with nothing new changes nothing either
    assert_same_warehouse(once, warehouse_contents(duckdb_url))
    runs = open_warehouse(duckdb_url).read_table("etl_run")
    assert list(runs.status) == ["success"] * 3


def test_each_table_of_a_night_records_its_rows_and_what_it_took_to_make(
    prefect_server, config, duckdb_url
):
    summary = run(config, full_refresh=True)
    warehouse = open_warehouse(duckdb_url)
    built = warehouse.read_table("etl_table_build").set_index("table_name")
    [run_id] = warehouse.read_table("etl_run").run_id
    assert set(built.run_id) == {run_id} and set(built.as_of_date.dt.date) == {AS_OF}
    assert set(built.index) == set(summary["loaded"])
    for table in ("fct_opportunity", "mart_funnel", "mart_stage_conversion"):
        assert built.rows_built[table] == warehouse.row_count(table) > 0
    assert (built.seconds >= 0).all() and built.seconds.sum() > 0
    # the slowest tables lead the table of the Prefect summary
    assert summary["seconds"] == built.seconds.to_dict()


def test_the_first_night_scores_forecasts_replayed_from_history_and_later_nights_keep_them(
    prefect_server, config, duckdb_url
):
    first = run(config, full_refresh=True)
    warehouse = open_warehouse(duckdb_url)
    replayed = warehouse.read_table("mart_forecast_backtest")
    # each of the last six closed months, forecast on its first day and the two months before
    made = set(zip(replayed.as_of_date, replayed.period_start, strict=True))
    assert made == set(backtest_moments(pd.Timestamp(AS_OF), 6))
    assert first["loaded"]["mart_forecast_backtest"] == len(replayed)
    # scored as `loudou forecast backtest` scores what it replays: by the same SQL, alike
    scored = warehouse.query("SELECT * FROM mart_forecast_accuracy WHERE origin = 'backtest'")
    plan = RunPlan.from_settings(load_settings(config))
    cases = backtest(read_state.fn(duckdb_url), plan, AS_OF, 6)
    assert len(scored) > 0
    assert_same_warehouse(
        {"scored": normalised(scored)}, {"scored": normalised(cases[scored.columns])}
    )
    # a later night replays nothing: the months it needs are kept
    second = run(config)
    assert second["loaded"]["mart_forecast_backtest"] == 0
    assert_same_warehouse(
        {"kept": normalised(replayed)},
        {"kept": normalised(warehouse.read_table("mart_forecast_backtest"))},
    )


def _hygiene_off_the_contract(monkeypatch) -> None:
    import transforms.build

    made = transforms.build.hygiene
    monkeypatch.setattr(
        transforms.build,
        "hygiene",
        lambda *a, **k: made(*a, **k).drop(columns="detail").assign(share=1.0),
    )


def _funnel_off_the_contract(monkeypatch) -> None:
    import flows.tasks

    made = flows.tasks.render

    def drifted(spec, **context):
        select = made(spec, **context)
        if spec.name != "mart_funnel":
            return select
        return f"SELECT * EXCLUDE (weighted_amount), 1.0 AS share FROM ({select})"

    monkeypatch.setattr(flows.tasks, "render", drifted)


@pytest.mark.parametrize(
    ("table", "missing", "drift"),
    [
        ("mart_hygiene", "detail", _hygiene_off_the_contract),
        ("mart_funnel", "weighted_amount", _funnel_off_the_contract),
    ],
)
def test_a_table_built_off_the_contract_is_refused_and_nothing_is_written(
    prefect_server, config, duckdb_url, monkeypatch, table, missing, drift
):
    """A table that lost a column (or grew one) would load NULLs without a word, whether
    pandas or a SQL file in the warehouse made it: the run stops in one line naming the
    columns, and the warehouse stays as it was."""
    run(config, full_refresh=True)
    before = warehouse_contents(duckdb_url)
    drift(monkeypatch)
    with pytest.raises(WarehouseError) as refused:
        run(config, full_refresh=True)
    assert str(refused.value) == (
        f"warehouse: {table} was built with columns that are not sql/warehouse/schema.sql's: "
        f"missing {missing}; not in the contract share"
    )
    assert_same_warehouse(before, warehouse_contents(duckdb_url))
    runs = open_warehouse(duckdb_url).read_table("etl_run")
    assert list(runs.status) == ["success", "failed"]


KILL_DURING_LOAD = textwrap.dedent("""
    import os, signal, sys
    from datetime import date
    import loudou.warehouse as warehouse

    original = warehouse.DuckDBWarehouse._apply_one

    def apply_then_die(self, con, write):
        written = original(self, con, write)
        if write.table == "fct_stage_interval":  # half-way through the load
            os.kill(os.getpid(), signal.SIGKILL)
        return written

    warehouse.DuckDBWarehouse._apply_one = apply_then_die
    from flows.nightly import nightly
    nightly(config=sys.argv[1], as_of=date.fromisoformat(sys.argv[2]), full_refresh=True)
""")


def test_a_run_killed_mid_load_leaves_the_warehouse_unchanged_and_is_marked_abandoned(
    prefect_server, config, sqlite_crm, duckdb_url, tmp_path, monkeypatch
):
    # the spool folders of this test's runs, apart from other tests' (which remove the
    # folders of runs whose process is gone)
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    run(config)
    before = warehouse_contents(duckdb_url)
    change_source(sqlite_crm)
    # the child reports to this session's Prefect test server
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "PREFECT_API_URL": str(get_current_settings().api.url),
        "TMPDIR": str(spool),
    }
    killed = subprocess.Popen(
        [sys.executable, "-c", KILL_DURING_LOAD, str(config), str(AS_OF)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = killed.communicate(timeout=300)
    assert killed.returncode == -9, stderr[-2000:]
    assert_same_warehouse(before, warehouse_contents(duckdb_url))
    runs = open_warehouse(duckdb_url).query("SELECT run_id, status FROM etl_run")
    # the killed run was recorded as running when it started, in a transaction of its own
    [killed_run] = runs.run_id[runs.status.eq("running")]
    # the killed run could not remove its tables' folder
    left = list(spool.glob(f"{SPOOL_PREFIX}{killed.pid}-*"))
    assert len(left) == 1 and any(left[0].glob("*.parquet"))
    # the next run picks the changes up, because the watermark did not move, and removes it
    assert run(config)["extracted"]["opportunities"] == 5
    assert not left[0].exists()
    runs = open_warehouse(duckdb_url).query("SELECT run_id, status, mode FROM etl_run")
    assert runs.set_index("run_id").status[killed_run] == "abandoned"
    assert sorted(runs.status) == ["abandoned", "success", "success"]
    assert sorted(runs["mode"].dropna()) == ["full refresh", "incremental"]


def test_postgresql_warehouse_holds_the_same_as_duckdb(
    prefect_server, tmp_path, sqlite_crm, duckdb_url, pg_url
):
    run(write_config(tmp_path, sqlite_crm, duckdb_url))
    (tmp_path / "pg").mkdir()
    pg_config = write_config(tmp_path / "pg", sqlite_crm, pg_url)
    run(pg_config)
    # the marts too: those made by SQL files run in each warehouse's own engine
    tables = [*DATA_TABLES, *SLICE_TABLES]
    assert_same_warehouse(
        warehouse_contents(duckdb_url, tables), warehouse_contents(pg_url, tables)
    )
    public_pool = open_warehouse(pg_url).row_count("mart_public_pool")
    assert public_pool > 0
    run(pg_config)  # incremental on PostgreSQL too
    assert open_warehouse(pg_url).row_count("etl_run") == 2


@pytest.fixture
def mysql_user_with_password(mysql_url):
    engine = sa.create_engine(MYSQL_ADMIN)
    database = sa.engine.make_url(mysql_url).database
    with engine.begin() as db:
        db.execute(sa.text("CREATE USER IF NOT EXISTS 'loudou_pw'@'%' IDENTIFIED BY 'right-pass'"))
        db.execute(sa.text(f"GRANT ALL ON {database}.* TO 'loudou_pw'@'%'"))
    yield mysql_url
    with engine.begin() as db:
        db.execute(sa.text("DROP USER IF EXISTS 'loudou_pw'@'%'"))


def failing_run(config: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["run", "nightly", "--config", str(config), "--as-of", str(AS_OF)], env=env
    )
    return result.exit_code, result.stderr.strip()


def test_bad_sources_fail_with_one_line_and_change_nothing(
    prefect_server, tmp_path, config, duckdb_url, mysql_user_with_password, small_crm
):
    run(config)
    before = warehouse_contents(duckdb_url)

    unreachable = write_config(tmp_path, "postgresql://loudou@127.0.0.1:1/crm", duckdb_url)
    code, message = failing_run(unreachable)
    assert code == 1
    assert message.startswith(
        "loudou: error: source: cannot connect to "
        "postgresql://loudou@127.0.0.1:1/crm: connection failed"
    )
    assert "\n" not in message

    url = sa.engine.make_url(mysql_user_with_password)
    write_crm(small_crm, mysql_user_with_password)
    wrong = write_config(
        tmp_path, f"mysql://loudou_pw:${{CRM_PW}}@{url.host}:{url.port}/{url.database}", duckdb_url
    )
    code, message = failing_run(wrong, env={"CRM_PW": "wrong-pass"})
    assert code == 1 and "\n" not in message
    assert "Access denied for user 'loudou_pw'" in message
    assert "wrong-pass" not in message and "***" in message

    missing_table = tmp_path / "partial.sqlite"
    write_crm(small_crm, f"sqlite:///{missing_table}")
    engine = sa.create_engine(f"sqlite:///{missing_table}")
    with engine.begin() as db:
        db.execute(sa.text("DROP TABLE crm_activities"))
    code, message = failing_run(write_config(tmp_path, f"sqlite:///{missing_table}", duckdb_url))
    assert code == 1
    assert message.endswith("no such table: crm_activities")
    assert "cannot read activities from sqlite:///" in message

    assert_same_warehouse(before, warehouse_contents(duckdb_url))
    runs = open_warehouse(duckdb_url).read_table("etl_run").sort_values("started_at")
    assert list(runs.status) == ["success", "failed", "failed", "failed"]
    assert runs.error.iloc[-1].endswith("no such table: crm_activities")


@pytest.mark.parametrize("deals", ["none", "one open", "one won"])
def test_an_empty_or_nearly_empty_crm_gives_empty_marts_not_a_crash(
    prefect_server, tmp_path, small_crm, deals
):
    """A new team's CRM on its first day: users and teams, and no deal or a single one."""
    tables = dict(small_crm.tables)
    opportunities = tables["opportunities"]
    status = {"none": None, "one open": "open", "one won": "won"}[deals]
    kept = opportunities[opportunities.status.eq(status)].iloc[:1]
    tables["opportunities"] = kept
    for name in ("stage_history", "field_history", "activities"):
        tables[name] = tables[name][tables[name].opportunity_id.isin(kept.opportunity_id)]
    tables["leads"] = tables["leads"].iloc[:0]
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    write_crm(type(small_crm)(tables), url)
    warehouse_url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    config = write_config(tmp_path, url, warehouse_url)
    first = run(config)
    second = run(config)  # and the incremental night after it
    assert (first["mode"], second["mode"]) == ("full refresh", "incremental")
    warehouse = open_warehouse(warehouse_url)
    assert warehouse.row_count("fct_opportunity") == len(kept)
    assert warehouse.row_count("dim_user") == len(tables["users"])
    funnel = warehouse.query(
        "SELECT SUM(open_count) AS n FROM mart_funnel WHERE scope_kind = 'company'"
    )
    assert (funnel.n.fillna(0) == (1 if status == "open" else 0)).all()
    won = warehouse.query(
        "SELECT SUM(won) AS n FROM mart_win_loss "
        "WHERE scope_kind = 'company' AND period_kind = 'month' AND dimension = 'team'"
    )
    assert won.n.fillna(0).iat[0] == (1 if status == "won" else 0)


def test_the_incremental_state_survives_moving_the_project_folder(
    prefect_server, tmp_path, small_crm
):
    """Relative paths in loudou.yaml resolve against its folder, and the watermarks are kept
    under the URL as written, so the night after a move is incremental, and etl_run says so."""
    before = tmp_path / "before"
    before.mkdir()
    write_crm(small_crm, f"sqlite:///{before / 'crm.sqlite'}")
    config = write_config(before, "sqlite:///crm.sqlite", "duckdb:///warehouse.duckdb")
    assert run(config)["mode"] == "full refresh"
    after = tmp_path / "after"
    before.rename(after)
    assert run(after / "loudou.yaml")["mode"] == "incremental"
    runs = open_warehouse(f"duckdb:///{after / 'warehouse.duckdb'}").query(
        "SELECT mode FROM etl_run ORDER BY started_at, finished_at"
    )
    assert runs["mode"].tolist() == ["full refresh", "incremental"]


def test_a_future_as_of_is_refused_and_a_past_one_leaves_the_current_state_current(
    prefect_server, config, duckdb_url
):
    from tests.warehouse_helpers import normalised

    tomorrow = date.today() + timedelta(days=2)
    refused = CliRunner().invoke(
        app, ["run", "nightly", "--config", str(config), "--as-of", str(tomorrow)]
    )
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"loudou: error: --as-of {tomorrow} is in the future")
    assert not Path(duckdb_url.split(":///")[1]).exists()  # nothing was touched

    run(config)
    warehouse = open_warehouse(duckdb_url)
    current = {t: normalised(warehouse.read_table(t)) for t in CURRENT_STATE_TABLES}
    past = AS_OF - timedelta(days=30)
    summary = nightly(config=str(config), as_of=past, full_refresh=True)
    assert summary["current_state"] == f"kept as of {AS_OF}"
    for table, rows in current.items():
        pd.testing.assert_frame_equal(rows, normalised(warehouse.read_table(table)), obj=table)
    days = warehouse.query("SELECT DISTINCT as_of_date FROM mart_funnel ORDER BY 1")
    assert [d.date() for d in days.as_of_date] == [past, AS_OF]


def test_a_stage_removed_from_the_config_is_refused_until_mapped(
    prefect_server, tmp_path, sqlite_crm, duckdb_url
):
    config = write_config(tmp_path, sqlite_crm, duckdb_url)
    run(config)
    before = warehouse_contents(duckdb_url)
    held = open_warehouse(duckdb_url).query(
        "SELECT COUNT(*) AS n, SUM(CASE WHEN status = 'open' THEN 1 ELSE 0 END) AS open "
        "FROM fct_opportunity WHERE stage = '购买决策'"
    )
    stages = [s for s in example_stages() if s["name"] != "购买决策"]
    write_config(tmp_path, sqlite_crm, duckdb_url, pipelines=[example_pipeline(stages)])
    refused = CliRunner().invoke(
        app, ["run", "nightly", "--config", str(config), "--as-of", str(AS_OF)]
    )
    assert refused.exit_code == 1
    line = refused.stderr.strip().splitlines()[-1]
    assert (
        f"stage '购买决策' is no longer configured: {held.n.iat[0]:,} deals sit in it "
        f"({int(held.open.iat[0]):,} open"
    ) in line
    assert "source.stage_mapping" in line
    assert_same_warehouse(before, warehouse_contents(duckdb_url))
    # mapped onto the stage before it, a full refresh moves the deals there
    write_config(
        tmp_path,
        sqlite_crm,
        duckdb_url,
        pipelines=[example_pipeline(stages)],
        source__stage_mapping={"购买决策": "明确需求"},
    )
    run(config, full_refresh=True)
    assert run(config)["mode"] == "incremental"
    stages_now = open_warehouse(duckdb_url).query("SELECT DISTINCT stage FROM fct_opportunity")
    assert "购买决策" not in set(stages_now.stage)


def example_stages() -> list[dict]:
    from tests.conftest import example_settings

    return example_settings()["pipelines"][0]["stages"]


def example_pipeline(stages: list[dict]) -> dict:
    from tests.conftest import example_settings

    return example_settings()["pipelines"][0] | {"stages": stages}
