"""The native schema from SQLite, PostgreSQL and MariaDB into canonical frames and DuckDB."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import sqlalchemy as sa

from flows.nightly import nightly
from loudou.canonical import TABLES, coerce
from loudou.errors import SourceError
from loudou.simulator import write_crm
from loudou.source import SourceSpec, read_raw, read_table
from loudou.warehouse import open_warehouse
from tests.conftest import AS_OF, write_config

# 4-byte characters (CJK extension B, emoji) need utf8mb4 end to end
AWKWARD_NAMES = [
    "𠮷野家（中国）餐饮有限公司",
    "深圳市腾讯计算机系统有限公司 🚀",
    "ＡＢＣ全角 Co., Ltd.",
    'O\'Brien & 李 "Trading"',
    "换行\n公司",
    "  前后空格  ",
]


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def source_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'crm.sqlite'}"
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "mysql_url")


@pytest.fixture
def awkward_crm(small_crm):
    crm = copy.deepcopy(small_crm)
    accounts = crm.tables["accounts"]
    accounts.loc[: len(AWKWARD_NAMES) - 1, "name"] = AWKWARD_NAMES
    return crm


def test_every_canonical_table_round_trips(source_url, awkward_crm):
    write_crm(awkward_crm, source_url)
    spec = SourceSpec(kind="native", url=source_url)
    for name, table in TABLES.items():
        extracted = read_table(spec, name).sort_values(list(table.key)).reset_index(drop=True)
        expected = (
            coerce(table, awkward_crm.tables[name], "UTC")
            .sort_values(list(table.key))
            .reset_index(drop=True)
        )
        pd.testing.assert_frame_equal(extracted, expected, check_dtype=False, obj=name)


def test_incremental_read_returns_only_rows_changed_after_the_watermark(source_url, small_crm):
    write_crm(small_crm, source_url)
    spec = SourceSpec(kind="native", url=source_url)
    by_update = small_crm.tables["opportunities"].sort_values("updated_at")
    since = by_update.updated_at.iloc[-5]
    changed = read_table(spec, "opportunities", since)
    assert len(changed) == 4
    history = read_table(spec, "stage_history", since)
    assert set(history.opportunity_id) == set(changed.opportunity_id)
    # rows held in quarantine come back by key, however old; a quote in a key is only data
    oldest = by_update.opportunity_id.iloc[0]
    retried = read_raw(spec, "opportunities", since, retry_ids=[oldest, "O'Brien"])
    assert set(retried.opportunity_id) == {*changed.opportunity_id, oldest}


def test_a_missing_postgresql_table_stops_with_one_line_naming_it(pg_url, small_crm):
    write_crm(small_crm, pg_url)
    engine = sa.create_engine(pg_url)
    with engine.begin() as db:
        db.execute(sa.text("DROP TABLE crm_activities"))
    engine.dispose()
    with pytest.raises(SourceError) as stopped:
        read_raw(SourceSpec(kind="native", url=pg_url), "activities")
    message = str(stopped.value)
    assert message.startswith("source: cannot read activities from postgresql")
    assert 'relation "crm_activities" does not exist' in message and "\n" not in message
    assert not stopped.value.transient


def test_source_time_zone_turns_naive_times_into_utc(sqlite_crm, small_crm):
    spec = SourceSpec(kind="native", url=sqlite_crm, timezone="Asia/Shanghai")
    extracted = read_table(spec, "opportunities").set_index("opportunity_id")
    original = small_crm.tables["opportunities"].set_index("opportunity_id")
    shift = original.created_at - extracted.created_at.reindex(original.index)
    assert (shift == pd.Timedelta(hours=8)).all()


def test_chinese_text_survives_to_duckdb_byte_for_byte(
    source_url, awkward_crm, tmp_path, prefect_server
):
    write_crm(awkward_crm, source_url)
    warehouse_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    nightly(config=str(write_config(tmp_path, source_url, warehouse_url)), as_of=AS_OF)
    warehouse = open_warehouse(warehouse_url)
    loaded = (
        warehouse.query("SELECT account_id, name FROM dim_account").set_index("account_id").name
    )
    source = awkward_crm.tables["accounts"].set_index("account_id").name
    assert {k: v.encode("utf-8") for k, v in loaded.items()} == {
        k: v.encode("utf-8") for k, v in source.items()
    }
    users = warehouse.query("SELECT user_id, name FROM dim_user").set_index("user_id").name
    assert users.to_dict() == awkward_crm.tables["users"].set_index("user_id").name.to_dict()
    stages = set(warehouse.query("SELECT DISTINCT stage FROM fct_stage_interval").stage)
    assert stages == {"待沟通", "发现机会", "明确需求", "购买决策"}


def test_configured_team_managers_replace_the_crms(sqlite_crm, small_crm):
    """For a CRM that names no team managers (HubSpot), config names who gets each digest."""
    spec = SourceSpec(kind="native", url=sqlite_crm, team_managers={"T0002": "U00017"})
    teams = read_table(spec, "teams").set_index("team_id").manager_id
    original = small_crm.tables["teams"].set_index("team_id").manager_id
    assert teams["T0002"] == "U00017"
    assert teams.drop("T0002").equals(original.drop("T0002").astype(teams.dtype))
