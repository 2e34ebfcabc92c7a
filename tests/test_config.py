"""loudou.yaml is validated on load: one clear line per mistake, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from loudou.cli import app
from loudou.config import load_settings, parse_settings
from loudou.errors import ConfigError
from tests.conftest import EXAMPLE, example_settings


def refusal(data: dict, tmp_path: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, tmp_path or Path("."))
    return str(caught.value).splitlines()


def test_example_config_loads_and_resolves_paths_next_to_the_file():
    settings = load_settings(EXAMPLE)
    assert settings.pipeline().open_stage_names == ["待沟通", "发现机会", "明确需求", "购买决策"]
    assert settings.pipeline().won_stage == "成单完成"
    assert settings.source.url == f"sqlite:///{EXAMPLE.parent / 'demo' / 'crm.sqlite'}"


def test_unknown_top_level_key_is_named_with_the_allowed_keys():
    data = example_settings() | {"warehose": {"url": "duckdb:///x.duckdb"}}
    [line] = refusal(data)
    assert line.startswith("warehose: unknown key (allowed here: source, warehouse, timezone")


def test_unknown_nested_key_names_its_exact_place():
    data = example_settings()
    data["pipelines"][0]["stages"][1]["probabilty"] = 0.3
    [line] = refusal(data)
    assert line.startswith(
        "pipelines[0].stages[1].probabilty: unknown key (allowed here: name, "
        "probability, stall_days, required, benchmark_rate)"
    )


def test_duplicate_stage_is_refused_with_both_positions():
    data = example_settings()
    data["pipelines"][0]["stages"].append({"name": "发现机会", "probability": 0.6})
    [line] = refusal(data)
    assert line == "pipelines[0].stages: duplicate stage name '发现机会' at positions 1 and 4"


def test_every_mistake_gets_its_own_line():
    data = example_settings()
    data["pipelines"][0]["stages"][0]["probability"] = 1.5
    data["timezone"] = "Mars/Olympus"
    data["source"]["kind"] = "pipedrive"
    lines = refusal(data)
    assert len(lines) == 3
    assert any(line.startswith("pipelines[0].stages[0].probability: ") for line in lines)
    assert any(line.startswith("timezone: unknown time zone 'Mars/Olympus'") for line in lines)
    assert (
        "source.kind: 'pipedrive' is not allowed; use one of: native, odoo, suitecrm, "
        "salesforce, hubspot" in lines
    )


def test_qualified_stage_must_be_an_open_stage():
    data = example_settings()
    data["pipelines"][0]["qualified_stage"] = "成单完成"
    [line] = refusal(data)
    assert line.startswith("pipelines[0]: qualified_stage '成单完成' is not one of the stages")


def test_a_literal_password_in_the_file_is_refused_without_echoing_it():
    data = example_settings()
    data["source"]["url"] = "postgresql://crm:hunter2@db/crm"
    [line] = refusal(data)
    assert "hunter2" not in line
    assert line.startswith("source.url: the password must come from the environment")


def test_password_comes_from_the_environment(monkeypatch):
    data = example_settings()
    data["source"]["url"] = "postgresql://crm:${CRM_PASSWORD}@db/crm"
    monkeypatch.setenv("CRM_PASSWORD", "s3cret")
    assert parse_settings(data).source.url == "postgresql://crm:s3cret@db/crm"
    monkeypatch.delenv("CRM_PASSWORD")
    assert refusal(data) == ["source.url: environment variable CRM_PASSWORD is not set"]


def test_cli_reports_config_mistakes_on_stderr_with_exit_code_1(tmp_path):
    data = example_settings()
    data["extract"]["overlap"] = 5
    path = tmp_path / "loudou.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(app, ["config", "--config", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "loudou: error: extract.overlap: unknown key (allowed here: overlap_minutes)"
    )


def test_cli_names_a_missing_config_file(tmp_path):
    result = CliRunner().invoke(app, ["run", "nightly", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml: config file not found" in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@db.example.com:5432/crm?password=hunter2",
        "postgresql://postgres@db.example.com:5432/crm?sslmode=require&PASSWORD=hunter2",
        "postgresql://postgres:hunter2@db.example.com:54x2/crm",
    ],
)
def test_a_password_anywhere_in_a_url_is_refused_and_never_echoed(url):
    data = example_settings()
    data["source"]["url"] = url
    with pytest.raises(ConfigError) as refused:
        parse_settings(data)
    assert "hunter2" not in str(refused.value)
    assert str(refused.value).startswith("source.url: ")


def test_secrets_are_masked_in_any_message():
    from loudou.config import mask_secrets, redact_url

    text = "cannot connect to postgresql://u:hunter2@h/db?password=hunter2&sslmode=require"
    assert "hunter2" not in mask_secrets(text)
    assert redact_url("postgresql://u@h/db?password=${PW}&sslmode=require") == (
        "postgresql://u@h/db?password=***&sslmode=require"
    )


def test_a_duckdb_warehouse_works_within_its_memory_limit_and_spills_to_its_folder(tmp_path):
    """memory_limit and temp_directory reach every connection to the warehouse; a mistaken
    size, or the settings on a PostgreSQL warehouse, are refused in one line."""
    from loudou.warehouse import open_warehouse

    data = example_settings()
    data["warehouse"] = {
        "url": "duckdb:///w.duckdb",
        "memory_limit": "512MB",
        "temp_directory": "spill",
    }
    settings = parse_settings(data, tmp_path)
    engine = open_warehouse(settings.warehouse.url).query(
        "SELECT current_setting('memory_limit') AS memory, "
        "current_setting('temp_directory') AS spill"
    )
    assert engine.memory[0] == "488.2 MiB"  # 512 MB, as DuckDB shows it
    assert engine.spill[0] == str(tmp_path / "spill")
    assert (tmp_path / "w.duckdb").exists()
    data["warehouse"]["memory_limit"] = "lots"
    [line] = refusal(data, tmp_path)
    assert line.startswith("warehouse.memory_limit: ") and "2GB" in line
    data["warehouse"] = {"url": "postgresql://postgres@localhost/w", "memory_limit": "1GB"}
    [line] = refusal(data, tmp_path)
    assert line.startswith("warehouse.memory_limit: applies to a DuckDB warehouse only")
