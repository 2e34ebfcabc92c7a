"""The warehouse's one transaction: a table replaced whole comes back whole when a later
write of the same run fails, key and all."""

import pandas as pd
import pytest

from loudou.warehouse import Write, open_warehouse


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
