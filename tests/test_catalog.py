"""The catalog declares every table a run builds, once, with inputs a run has."""

from __future__ import annotations

import re

from loudou.catalog import (
    BY_NAME,
    EVERY_RUN,
    STATE,
    TABLES,
    build_order,
    load_tables,
    sql_tables,
)
from loudou.paths import SQL_DIR
from loudou.warehouse import contract_columns, scratch_statements
from transforms.build import MADE_IN_LOAD

SCHEMA = (SQL_DIR / "warehouse" / "schema.sql").read_text(encoding="utf-8")
CONTRACT = {
    t
    for t in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA)
    if t[:4] in ("dim_", "fct_", "mart")
}


def test_every_contract_table_a_run_builds_is_declared_once_with_its_key():
    names = [spec.name for spec in TABLES]
    assert len(names) == len(set(names))
    assert {spec.name for spec in TABLES if not spec.scratch} == CONTRACT
    assert {spec.name for spec in TABLES if spec.scratch} == set(scratch_statements())
    for spec in TABLES:
        if not spec.scratch:
            assert set(spec.key) <= set(contract_columns()[spec.name]), spec.name


def test_a_table_reads_only_the_state_and_declared_tables_and_comes_after_them():
    order = build_order()
    assert sorted(order) == sorted(spec.name for spec in TABLES)
    for spec in TABLES:
        for read in spec.reads:
            assert read in STATE or read in order, f"{spec.name} reads {read}"
            if read in order:
                assert order.index(read) < order.index(spec.name)


def test_each_sql_table_has_its_file_and_reads_only_what_it_declares():
    for spec in sql_tables():
        assert spec.sql_path.is_file(), spec.sql_path
        sql = re.sub(r"--[^\n]*", "", spec.sql_path.read_text(encoding="utf-8"))
        named = set(re.findall(r"(?<![:\w.])(?:stg|dim|fct|mart|day)_[a-z_]+\b", sql)) - {spec.name}
        assert named <= set(spec.reads), f"{spec.name} reads {named - set(spec.reads)}"


def test_a_days_table_made_in_the_load_reads_only_what_every_run_writes():
    """A backfilled day's run rebuilds no current-state table: what a day's table made in the
    load reads must be the state, the stays, a table of the same day or a scratch table."""
    for spec in load_tables():
        for read in spec.reads if spec.sliced else ():  # current-state ones: current runs only
            other = BY_NAME.get(read)
            assert read in EVERY_RUN or other.sliced or other.scratch, f"{spec.name} reads {read}"


def test_each_python_table_made_in_the_load_has_its_function_and_is_a_days_slice():
    for spec in load_tables():
        if not spec.in_sql:
            assert spec.made_by in MADE_IN_LOAD, spec.name
            assert spec.sliced, spec.name  # its rows replace the as-of day's (PythonBuild)


def test_a_table_made_in_one_pass_reads_only_the_state():
    """A backfill makes these for a chunk of days before any day's own run: what they read
    must be there already, whatever the day (sql/facts/_days.sql gives their days)."""
    one_pass = [spec for spec in TABLES if spec.one_pass]
    assert one_pass
    for spec in one_pass:
        assert spec.in_sql and spec.sliced, spec.name
        assert set(spec.reads) <= set(STATE), spec.name
        assert "run_days(" in spec.sql_path.read_text(encoding="utf-8"), spec.name
