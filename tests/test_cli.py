"""The command as a newcomer meets it: every failure is one line on stderr and exit 1, with
no Prefect log lines, tracebacks or telemetry errors; `config --check` says what is ready."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_config

LOUDOU = str(Path(sys.executable).parent / "loudou")


def loudou(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # no PREFECT_API_URL: the command starts Prefect as a user's shell would
    clean = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run(
        [LOUDOU, *args],
        cwd=cwd,
        env=clean | {"PYTHONPATH": str(ROOT)} | (env or {}),
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line(result: subprocess.CompletedProcess, starts: str) -> None:
    assert result.returncode == 1, result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"loudou: error: {starts}"), lines[0]


def test_a_failed_nightly_is_one_line_naming_what_failed(tmp_path):
    empty = tmp_path / "crm.sqlite"
    empty.write_bytes(b"")
    config = write_config(tmp_path, "sqlite:///crm.sqlite", "duckdb:///w.duckdb")
    result = loudou("run", "nightly", "--config", str(config), cwd=tmp_path)
    assert_one_line(result, "source: ")
    assert "crm_opportunities" in result.stderr or "crm_" in result.stderr
    verbose = loudou("--verbose", "run", "nightly", "--config", str(config), cwd=tmp_path)
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


@pytest.mark.parametrize(
    ("args", "starts"),
    [
        (["digest", "--week", "2026-11-17"], "--week: 2026-11-17 is a Tuesday; give the Monday"),
        (["digest", "--out", "d"], "--out is where --dry-run writes"),
        (["digest", "--week", "2030-01-07"], "--week 2030-01-07: the week ends on 2030-01-13"),
        (["run", "nightly", "--as-of", "2999-01-01"], "--as-of 2999-01-01 is in the future"),
    ],
)
def test_mistakes_on_the_command_line_are_one_line(tmp_path, sqlite_crm, args, starts):
    config = write_config(tmp_path, sqlite_crm, "duckdb:///w.duckdb")
    result = loudou(*args, "--config", str(config), cwd=tmp_path)
    assert_one_line(result, starts)


def test_simulate_into_an_unreachable_database_is_one_line_without_the_password(tmp_path):
    result = loudou(
        "simulate", "--url", "postgresql+psycopg://u:hunter2@127.0.0.1:1/crm", cwd=tmp_path
    )
    assert_one_line(result, "OperationalError")
    assert "hunter2" not in result.stderr


def test_config_check_connects_to_each_part_and_says_what_is_not_ready(tmp_path, sqlite_crm):
    config = write_config(tmp_path, sqlite_crm, "duckdb:///w.duckdb")
    result = loudou(
        "config", "--check", "--config", str(config), cwd=tmp_path, env={"LOUDOU_SMTP_PASSWORD": ""}
    )
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    assert lines["source"].strip().startswith("ready: native sqlite:///")
    assert "500 deals" in lines["source"]
    assert lines["warehouse"].strip().startswith("ready:") and "not made yet" in lines["warehouse"]
    assert lines["smtp"].strip().startswith("NOT READY")  # smtp.example.com does not resolve
    assert result.returncode == 1
    missing = write_config(tmp_path, "sqlite:///nowhere.sqlite", "duckdb:///w.duckdb")
    result = loudou("config", "--check", "--config", str(missing), cwd=tmp_path)
    assert "source:    NOT READY: FileNotFoundError: no such file" in result.stdout
    assert not (tmp_path / "nowhere.sqlite").exists()
