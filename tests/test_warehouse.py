"""The warehouse's one transaction: a table replaced whole comes back whole when a later
write of the same run fails, key and all; rows spooled to a file load as the frame would."""

import pandas as pd
import pytest

from loudou.warehouse import Spooled, Write, open_warehouse


def test_a_failed_apply_brings_a_replaced_table_back_with_its_key(tmp_path):
    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    warehouse.ensure_schema()
    teams = pd.DataFrame({"team_id": ["T1", "T2"], "name": ["东区", "西区"], "manager_id": None})
    warehouse.apply([Write("dim_team", teams, replace="all")])

    with pytest.raises(Exception, match="no_such_table"):
        warehouse.apply(
            [Write("dim_team", teams.iloc[:1], replace="all"), Write("no_such_table", teams)]
        )
    assert list(warehouse.read_table("dim_team").team_id) == ["T1", "T2"]

    # the table made again keeps its primary key
    with pytest.raises(Exception, match="PRIMARY KEY"):
        warehouse.apply([Write("dim_team", pd.concat([teams, teams]), replace="all")])
    assert warehouse.row_count("dim_team") == 2


@pytest.mark.parametrize("backend", ["duckdb", "postgresql"])
def test_spooled_rows_load_as_their_frame_does(backend, tmp_path, request):
    url = (
        f"duckdb:///{tmp_path / 'w.duckdb'}"
        if backend == "duckdb"
        else request.getfixturevalue("pg_url")
    )
    warehouse = open_warehouse(url)
    warehouse.ensure_schema()
    # no manager_id column: it loads as NULL, as a frame without it does
    teams = pd.DataFrame(
        {
            "team_id": ["T1", "T2"],
            "name": ["东区", None],
            "updated_at": pd.to_datetime(["2026-11-01 08:30", None]),
        }
    )
    snapshot = pd.DataFrame(
        {
            "as_of_date": pd.Timestamp("2026-11-20"),
            "opportunity_id": ["O1", "O2"],
            "stage": ["谈判", "Qualify"],
            "amount": [1200.5, None],
            "expected_close_date": pd.to_datetime(["2026-12-31", None]),
        }
    )
    spooled = [
        Write(name, Spooled.write(rows, tmp_path / f"{name}.parquet"), replace="all")
        for name, rows in (("dim_team", teams), ("fct_pipeline_snapshot", snapshot))
    ]
    assert [len(w.rows) for w in spooled] == [2, 2]
    assert warehouse.apply([*spooled, Write("dim_territory", teams.iloc[:0], replace="all")]) == 4
    loaded = {name: warehouse.read_table(name) for name in ("dim_team", "fct_pipeline_snapshot")}

    warehouse.apply(
        [
            Write("dim_team", teams, replace="all"),
            Write("fct_pipeline_snapshot", snapshot, replace="all"),
        ]
    )
    for name, spooled_rows in loaded.items():
        pd.testing.assert_frame_equal(spooled_rows, warehouse.read_table(name))
    assert loaded["dim_team"].manager_id.isna().all()
    assert loaded["dim_team"].name.tolist()[0] == "东区"
    assert loaded["fct_pipeline_snapshot"].stage.tolist() == ["谈判", "Qualify"]
