"""The warehouse's one transaction: a table replaced whole comes back whole when a later
write of the same run fails, key and all; rows spooled to a file load as the frame would."""

import re

import pandas as pd
import pytest

from loudou.warehouse import Spooled, Write, open_warehouse, schema_statements


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


WAREHOUSE_COLUMNS = """
    SELECT c.table_name, c.column_name, c.data_type
    FROM information_schema.columns c
    JOIN information_schema.tables t
      ON t.table_name = c.table_name AND t.table_schema = c.table_schema
    WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
    ORDER BY c.table_name, c.ordinal_position
"""


def _primary_keys() -> dict[str, set[str]]:
    """Each table's key columns, as schema.sql declares them."""
    keys: dict[str, set[str]] = {}
    for statement in schema_statements():
        table = re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", statement)
        if table is None:
            continue
        inline = re.findall(r"(\w+) \w+ PRIMARY KEY", statement)
        listed = re.search(r"PRIMARY KEY \(([^)]*)\)", statement)
        columns = inline + ([c.strip() for c in listed.group(1).split(",")] if listed else [])
        keys[table.group(1)] = set(columns)
    return keys


def _rows_with_gaps(columns: pd.DataFrame, keys: set[str]) -> pd.DataFrame:
    """Two rows as a transform makes them: a value in every column (integers as floats, as
    pandas holds an integer column with a gap), then NULL in every column but the keys."""
    present = {
        "integer": 375.0,
        "bigint": 12.0,
        "double precision": 1.5,
        "double": 1.5,
        "boolean": True,
        "date": pd.Timestamp("2026-10-31"),
        "timestamp without time zone": pd.Timestamp("2026-10-31 23:30:00"),
        "timestamp": pd.Timestamp("2026-10-31 23:30:00"),
    }
    first = {c.column_name: present.get(c.data_type.lower(), "值") for c in columns.itertuples()}
    # keys stay set (and distinct) so that every table takes both rows
    second = {
        name: (value + pd.Timedelta(days=1) if isinstance(value, pd.Timestamp) else "second")
        if name in keys
        else None
        for name, value in first.items()
    }
    rows = pd.DataFrame([first, second])
    for name, value in first.items():
        if isinstance(value, float):
            rows[name] = rows[name].astype("float64")
        elif isinstance(value, pd.Timestamp):
            rows[name] = pd.to_datetime(rows[name])
    return rows


def test_every_column_reaches_both_warehouses_with_its_type_missing_values_included(
    tmp_path, pg_url
):
    """Each table of the schema takes a row of values and a row of NULLs (integer columns as
    floats with a gap, as pandas makes them) on DuckDB and PostgreSQL, and both give back
    the same values in the same dtypes."""
    duck = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    pg = open_warehouse(pg_url)
    read_back = {}
    keys = _primary_keys()
    for warehouse in (duck, pg):
        warehouse.ensure_schema()
        columns = warehouse.query(WAREHOUSE_COLUMNS)
        writes = [
            Write(table, _rows_with_gaps(cols, keys.get(table, set())), replace="all")
            for table, cols in columns.groupby("table_name")
        ]
        assert len(writes) > 25
        warehouse.apply(writes)
        read_back[warehouse] = {w.table: warehouse.read_table(w.table) for w in writes}
    assert read_back[duck].keys() == read_back[pg].keys()
    for table, rows in read_back[duck].items():
        other = read_back[pg][table]
        assert len(rows) == 2, table
        sort = list(rows.columns[:2])
        pd.testing.assert_frame_equal(
            rows.sort_values(sort).reset_index(drop=True),
            other.sort_values(sort).reset_index(drop=True),
            check_dtype=False,
            obj=table,
        )
        for column in rows.columns:
            assert rows[column].dtype.kind == other[column].dtype.kind or (
                rows[column].dtype.kind in "iu" and other[column].dtype.kind in "iu"
            ), (table, column, rows[column].dtype, other[column].dtype)
