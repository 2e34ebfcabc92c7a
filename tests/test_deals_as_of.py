"""The deals as they were at a moment, in SQL (sql/facts/_deals_as_of.sql, which the snapshot,
the movement and the forecast accuracy start from) and in pandas (transforms.snapshot, which
the tables still made in pandas start from), must agree while both exist: on the simulator's
CRM, at moments all over its history, all at once."""

from __future__ import annotations

import pandas as pd

from flows.tasks import RunPlan
from loudou.canonical import TABLES, coerce
from loudou.catalog import render_text
from loudou.warehouse import DuckDBWarehouse, Write, staging_table
from transforms.build import live_state
from transforms.intervals import stage_entries
from transforms.snapshot import deals_as_of, tracked_changes

COLUMNS = ["opportunity_id", "owner_id", "stage", "status", "amount", "expected_close_date"]
QUERY = """
{% import "facts/_deals_as_of.sql" as history %}
{% from "dims/_stages.sql" import stage_rows %}
WITH {{ stage_rows("stage_info", stages) }},
moments (moment) AS (
{% for moment in moments %}
    SELECT CAST('{{ moment }}' AS TIMESTAMP){{ " UNION ALL" if not loop.last }}
{% endfor %}
),
{{ history.deals_at("deals", "moments", "stage_info") }}
SELECT * FROM deals
"""


def test_the_sql_deals_at_many_moments_are_the_pandas_deals_at_each(small_crm, settings):
    state = {name: coerce(table, small_crm.tables[name], "UTC") for name, table in TABLES.items()}
    # a deal deleted in the CRM is in no moment's deals
    deleted = state["opportunities"].opportunity_id.iloc[:3]
    state["opportunities"] = state["opportunities"].assign(
        is_deleted=state["opportunities"].opportunity_id.isin(deleted)
    )
    stages = RunPlan.from_settings(settings).stages
    created = state["opportunities"].created_at
    first = created.min() + pd.Timedelta(days=1)
    moments = pd.date_range(first, created.max() + pd.Timedelta(days=60), periods=9)
    moments = [*moments.round("s"), pd.Timestamp("2026-10-01 16:00")]

    warehouse = DuckDBWarehouse("duckdb:///:memory:")
    with warehouse.session():
        warehouse.ensure_schema()
        with warehouse.transaction() as transaction:
            for name in ("opportunities", "stage_history", "field_history"):
                transaction.write(Write(staging_table(name), state[name]))
        query = render_text(QUERY, stages=stages.to_dict("records"), moments=moments)
        made = warehouse.query(query)

    live = live_state(state)
    opportunities = live["opportunities"]
    entries = stage_entries(opportunities, live["stage_history"])
    changes = tracked_changes(live["field_history"], opportunities)
    assert not made.opportunity_id.isin(deleted).any()
    for moment in moments:
        expected = deals_as_of(opportunities, entries, changes, stages, moment)
        at = made[made.moment.eq(moment)]
        assert len(at) == len(expected) > 0, moment
        pd.testing.assert_frame_equal(
            at[COLUMNS].sort_values("opportunity_id").reset_index(drop=True),
            expected[COLUMNS].sort_values("opportunity_id").reset_index(drop=True),
            check_dtype=False,
            obj=str(moment),
        )
