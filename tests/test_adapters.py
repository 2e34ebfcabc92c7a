"""CRM adapters: each CRM's own tables, filled with the simulator's data in that CRM's shape
on the database it runs on, give the same warehouse as the native source on the same data."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.nightly import nightly
from loudou.canonical import TABLES
from loudou.cli import app
from loudou.config import Settings, load_settings
from loudou.simulator import SimulatedCRM, write_crm
from loudou.source import SourceSpec, read_raw
from tests.conftest import AS_OF, SIM_NOW, write_config
from tests.replicas import Replica, hubspot, odoo, salesforce, suitecrm
from tests.warehouse_helpers import (
    DATA_TABLES,
    assert_same_warehouse,
    normalised,
    warehouse_contents,
)
from transforms.quality import OPPORTUNITY_CHILDREN


def nightly_warehouse(directory: Path, kind: str, source_url: str) -> dict:
    directory.mkdir()
    warehouse_url = f"duckdb:///{directory / 'warehouse.duckdb'}"
    config = write_config(
        directory, source_url, warehouse_url, source__kind=kind, extract__overlap_minutes=0
    )
    nightly(config=str(config), as_of=AS_OF)
    return warehouse_contents(warehouse_url, DATA_TABLES)


def assert_incremental_reads_only_changes_and_retries(config: Path, deal: str) -> None:
    """Every adapter query with its incremental and retry clauses, on the real database:
    nothing changed since, so only the retried deal and its history come back."""
    spec = SourceSpec.from_settings(load_settings(config))
    later = SIM_NOW + timedelta(days=1)
    deal_tables = {"opportunities", *OPPORTUNITY_CHILDREN}
    for name, table in TABLES.items():
        if table.incremental == "full":
            continue
        frame = read_raw(spec, name, later, [deal] if name in deal_tables else ["no-such-key"])
        if name in {"opportunities", "stage_history"}:
            assert set(frame.opportunity_id) == {deal}, name
        elif name in OPPORTUNITY_CHILDREN:
            assert set(frame.opportunity_id) <= {deal}, name
        else:
            assert frame.empty, name


def assert_adapter_equals_native(
    tmp_path: Path, replica: Replica, kind: str, url: str, unknown: tuple[str, ...] = ()
) -> None:
    """`unknown`: columns the CRM cannot know (its adapter's unrecorded fields), NULL in the
    adapter's warehouse where the native source, which records everything, has values."""
    replica.write(url)
    native_url = f"sqlite:///{tmp_path / 'native.sqlite'}"
    write_crm(replica.as_simulated(), native_url)
    expected = nightly_warehouse(tmp_path / "native", "native", native_url)
    for table, frame in expected.items():
        for column in set(unknown) & set(frame.columns):
            assert frame[column].notna().any(), f"{table}.{column}: known in the native run"
            expected[table] = normalised(frame.assign(**{column: None}))
    got = nightly_warehouse(tmp_path / kind, kind, url)
    assert_incremental_reads_only_changes_and_retries(
        tmp_path / kind / "loudou.yaml", got["fct_opportunity"].opportunity_id.iloc[0]
    )
    del expected["etl_watermark"], got["etl_watermark"]  # keyed by the source's address
    assert len(got["fct_opportunity"]) == len(replica.canonical["opportunities"])
    assert_same_warehouse(got, expected)


@pytest.mark.parametrize("version", [16, 17])
def test_odoo_gives_the_warehouse_of_the_native_source(
    prefect_server,
    tmp_path: Path,
    pg_url: str,
    small_crm: SimulatedCRM,
    settings: Settings,
    version: int,
) -> None:
    """Close-date pushes are unknown (Odoo does not track date_deadline), an emptied
    salesperson is no owner, a won deal dragged back is open without a close time, a deal
    without a company takes the main company's currency."""
    replica = odoo.replicate(small_crm, settings.pipeline(), version)
    assert_adapter_equals_native(
        tmp_path, replica, "odoo", pg_url, unknown=("close_date_push_count",)
    )


@pytest.mark.parametrize("mode", salesforce.MODES)
def test_salesforce_gives_the_warehouse_of_the_native_source(
    prefect_server,
    tmp_path: Path,
    pg_url: str,
    small_crm: SimulatedCRM,
    settings: Settings,
    mode: str,
) -> None:
    """Stock stage names reach the example pipeline through the adapter's default mapping;
    reps in roles below their manager's are in the manager's team; open tasks, deleted
    records and (history mode) older versions do not count; instants are timestamptz."""
    replica = salesforce.replicate(small_crm, settings.pipeline(), mode)
    assert set(replica.tables["opportunity"].stage_name) <= {
        *salesforce.STOCK_STAGES,
        salesforce.WON,
        salesforce.LOST,
    }
    assert_adapter_equals_native(tmp_path, replica, "salesforce", pg_url)


@pytest.mark.parametrize("shape", hubspot.SHAPES)
def test_hubspot_gives_the_warehouse_of_the_native_source(
    prefect_server,
    tmp_path: Path,
    pg_url: str,
    small_crm: SimulatedCRM,
    settings: Settings,
    shape: str,
) -> None:
    """Closed Lost deals are lost under either name of the closed flag; instants are
    timestamptz; close dates are the portal's days (Asia/Shanghai, the reporting zone);
    activities come from v1 or v3 engagements, a deleted v3 call not counted; an owner is
    active while it has an active user."""
    replica = hubspot.replicate(small_crm, settings.pipeline(), shape)
    assert settings.timezone == hubspot.PORTAL_TIMEZONE
    assert (replica.canonical["opportunities"].status == "lost").sum() > 0
    assert_adapter_equals_native(tmp_path, replica, "hubspot", pg_url)


def test_suitecrm_on_mariadb_gives_the_warehouse_of_the_native_source(
    prefect_server, tmp_path: Path, mysql_url: str, small_crm: SimulatedCRM, settings: Settings
) -> None:
    replica = suitecrm.replicate(small_crm, settings.pipeline())
    assert_adapter_equals_native(tmp_path, replica, "suitecrm", mysql_url)


def test_a_crm_stage_without_a_mapping_is_named_in_one_line(
    prefect_server, tmp_path: Path, pg_url: str, small_crm: SimulatedCRM, settings: Settings
) -> None:
    """A stage the org added and nobody mapped stops the first run with the stages to map."""
    replica = salesforce.replicate(small_crm, settings.pipeline())
    for table, column in [("opportunity", "stage_name"), ("opportunity_history", "stage_name")]:
        frame = replica.tables[table]
        frame[column] = frame[column].replace(
            {"Needs Analysis": "Verbal Commit", "Prospecting": "Discovery"}
        )
    replica.write(pg_url)
    warehouse_url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    config = write_config(tmp_path, pg_url, warehouse_url, source__kind="salesforce")
    result = CliRunner().invoke(app, ["run", "nightly", "--config", str(config)])
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.startswith(
        "loudou: error: data quality: the run stopped before the load: "
        "stages that need a mapping: 'Discovery' ("
    )
    assert "'Verbal Commit' (" in message and "source.stage_mapping" in message
    assert "'Qualification'" not in message  # mapped by the adapter's default mapping
