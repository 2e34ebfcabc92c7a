"""The data-quality gate: Great Expectations suites (expectations/canonical.yaml plus what the
canonical model implies) run on each night's extracted frames before they are merged.

Row failures are held back into `dq_quarantine` and the run goes on; table failures stop the
run before the load. GX gates with SUMMARY results; only expectations that failed on rows are
run again, on those expectations alone, for the failing row positions (../shared/STACK.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from loudou.canonical import TABLES, CanonicalTable
from loudou.config import Settings
from loudou.errors import LoudouError
from loudou.paths import ROOT
from transforms.quality import (
    OPPORTUNITY_CHILDREN,
    earliest_allowed_at,
    failures,
    held_back,
    previous_to_stage,
    typed_frame,
    unresolved,
)
from transforms.stages import stage_dimension

SUITE_FILE = ROOT / "expectations" / "canonical.yaml"
# the live opportunity ids an incremental run reads to find hard deletes: a source that
# suddenly has none is a broken source, not a night of deletions
LIVE_KEYS = "opportunity_keys"
_PARAMETER = re.compile(r"^\$([a-z_]+)$")
_IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
SCHEMA_CHECK = "expect_table_columns_to_match_set"


class DataQualityError(LoudouError):
    """A table failed the gate; the run stops before the load. Carries the dq_result rows."""

    def __init__(self, message: str, results: pd.DataFrame):
        super().__init__(message)
        self.results = results


@dataclass(frozen=True)
class QualityRules:
    """What the gate accepts, read once from loudou.yaml."""

    stages: tuple[str, ...]
    pipelines: tuple[str, ...]
    currencies: tuple[str, ...]
    max_amount: float
    future_tolerance: timedelta
    history_tolerance: timedelta
    max_failing_share: float
    min_rows_before_empty: int
    min_failing_rows: int

    @classmethod
    def from_settings(cls, settings: Settings) -> QualityRules:
        quality = settings.quality
        return cls(
            stages=tuple(stage_dimension(settings.pipelines).stage.unique()),
            pipelines=tuple(p.name for p in settings.pipelines),
            currencies=tuple(quality.currencies or [settings.currency]),
            max_amount=quality.max_amount,
            future_tolerance=timedelta(hours=quality.future_tolerance_hours),
            history_tolerance=timedelta(hours=quality.history_tolerance_hours),
            max_failing_share=quality.max_failing_share,
            min_rows_before_empty=quality.min_rows_before_empty_is_an_error,
            min_failing_rows=quality.min_failing_rows,
        )

    def parameters(self, now: datetime) -> dict[str, Any]:
        """The values `$name` stands for in the suite file."""
        return {
            "stages": list(self.stages),
            "pipelines": list(self.pipelines),
            "currencies": list(self.currencies),
            "max_amount": self.max_amount,
            "latest_allowed": now + self.future_tolerance,
        }


@dataclass(frozen=True)
class Check:
    """One expectation of a table's suite, with what a failure means."""

    table: str
    expect: str
    arguments: dict[str, Any]
    severity: str = "row"
    reason: str = ""

    @property
    def columns(self) -> list[str]:
        args = self.arguments
        return [args[k] for k in ("column", "column_A", "column_B") if k in args] + args.get(
            "column_list", []
        )

    def reads(self, frame: pd.DataFrame) -> list[str]:
        """The frame's columns the check reads: its own and those its row condition names."""
        condition = set(_IDENTIFIER.findall(self.arguments.get("row_condition", "")))
        return [c for c in frame.columns if c in self.columns or c in condition]

    @property
    def reads_rows(self) -> bool:
        """The schema check reads the frame's columns, not its rows."""
        return self.expect != SCHEMA_CHECK

    @property
    def name(self) -> str:
        return f"{self.expect}({', '.join(self.columns)})" if self.columns else self.expect

    def expectation(self, parameters: dict[str, Any], position: int) -> Any:
        import great_expectations.expectations as gxe

        def value(v: Any) -> Any:
            match = _PARAMETER.match(v) if isinstance(v, str) else None
            return parameters[match.group(1)] if match else v

        cls = getattr(gxe, "".join(part.title() for part in self.expect.split("_")), None)
        if cls is None:
            raise LoudouError(f"{SUITE_FILE.name}: {self.table}: no GX expectation {self.expect}")
        return cls(
            **{k: value(v) for k, v in self.arguments.items()},
            meta={"check": position},
            notes=f"severity {self.severity}" + (f": {self.reason}" if self.reason else ""),
        )


def _unparsed(table: str) -> Check:
    return Check(
        table,
        "expect_column_values_to_be_null",
        {"column": "unparsed_values"},
        reason="value of the wrong type: {unparsed_values}",
    )


def model_checks(table: CanonicalTable) -> list[Check]:
    """What the canonical model implies for every table."""
    name = table.name
    # one expectation for every column: GX's cost is per expectation, whatever it reads
    checks = [
        Check(
            name,
            SCHEMA_CHECK,
            {"column_set": list(table.columns), "exact_match": False},
            "table",
            "a canonical column is missing",
        )
    ]
    unique = (
        Check(name, "expect_column_values_to_be_unique", {"column": table.key[0]}, "table")
        if len(table.key) == 1
        else Check(
            name, "expect_compound_columns_to_be_unique", {"column_list": list(table.key)}, "table"
        )
    )
    checks.append(
        Check(unique.table, unique.expect, unique.arguments, "table", "the key is not unique")
    )
    checks += [
        Check(name, "expect_column_values_to_not_be_null", {"column": k}, reason=f"{k} is missing")
        for k in table.key
    ]
    checks.append(_unparsed(name))
    checks.append(
        Check(
            name,
            "expect_table_row_count_to_be_between",
            {"min_value": "$min_rows"},
            "table",
            "the table is empty",
        )
    )
    return checks


@dataclass(frozen=True)
class Suites:
    """Every table's checks and references, as the suite file and the model define them."""

    checks: dict[str, list[Check]]
    references: dict[str, dict[str, str]]

    @classmethod
    def load(cls, path: Path = SUITE_FILE) -> Suites:
        written = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        unknown = sorted(set(written) - set(TABLES))
        if unknown:
            raise LoudouError(f"{path.name}: no canonical table {', '.join(unknown)}")
        checks: dict[str, list[Check]] = {}
        references: dict[str, dict[str, str]] = {}
        for name, table in TABLES.items():
            entry = written.get(name) or {}
            references[name] = dict(entry.get("references") or {})
            checks[name] = model_checks(table) + [
                Check(
                    name,
                    "expect_column_values_to_be_null",
                    {"column": f"unresolved_{column}"},
                    reason=f"{column} {{unresolved_{column}}} is not in {target}",
                )
                for column, target in references[name].items()
            ]
            for item in entry.get("expectations") or []:
                item = dict(item)
                checks[name].append(
                    Check(
                        name,
                        item.pop("expect"),
                        item,
                        severity=item.pop("severity", "row"),
                        reason=item.pop("reason", ""),
                    )
                )
        checks[LIVE_KEYS] = [
            Check(
                LIVE_KEYS,
                "expect_table_row_count_to_be_between",
                {"min_value": "$min_rows"},
                "table",
                "the source has no opportunities",
            )
        ]
        return cls(checks, references)


@dataclass(frozen=True)
class Checked:
    """What one expectation found on one table."""

    check: Check
    success: bool
    unexpected_count: int | None
    observed: str
    failing_rows: pd.Index = field(default_factory=lambda: pd.Index([], dtype="int64"))


def runnable(checks: list[Check], frame: pd.DataFrame) -> list[Check]:
    """A check on an absent column cannot run; the schema check reports the column."""
    return [c for c in checks if set(c.columns) <= set(frame)]


class Validator:
    """Runs suites on pandas frames in an ephemeral GX context (imported only when used)."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints every batch under 1 GB by hashing all its values, a batch marker
        # loudou never reads: a third of the validation at scale 10 (pandas_execution_engine)
        pandas_execution_engine.HASH_THRESHOLD = 0
        self._gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._source = self.context.data_sources.add_pandas("loudou")
        self._batches: dict[str, Any] = {}

    def release(self) -> None:
        """GX keeps the newest context as its global project, and with it every frame this
        validator checked (a copy of the whole extract, gigabytes at scale): let them go."""
        from great_expectations.data_context.data_context.context_factory import (
            project_manager,
        )

        project_manager.set_project(None)

    def batch(self, table: str, frame: pd.DataFrame) -> Any:
        if table not in self._batches:
            asset = self._source.add_dataframe_asset(table)
            self._batches[table] = asset.add_batch_definition_whole_dataframe(table)
        return self._batches[table].get_batch(batch_parameters={"dataframe": frame})

    def suite(self, table: str, checks: list[Check], parameters: dict[str, Any]) -> Any:
        return self._gx.ExpectationSuite(
            name=table,
            expectations=[c.expectation(parameters, i) for i, c in enumerate(checks)],
        )

    def run(
        self, table: str, frame: pd.DataFrame, checks: list[Check], parameters: dict[str, Any]
    ) -> list[Checked]:
        """Every check on the frame; failing rows (positions) for failing row checks.

        Checks run in groups by the columns they read, each group on only those columns: GX
        filters its batch whole for every expectation, and taking every column of a wide
        frame again and again was most of its time."""
        checks = runnable(checks, frame)
        groups: dict[tuple[tuple[str, ...], bool], list[int]] = {}
        for position, check in enumerate(checks):
            groups.setdefault((tuple(check.reads(frame)), check.reads_rows), []).append(position)
        checked: dict[int, Checked] = {}
        for (columns, reads_rows), positions in groups.items():
            group = [checks[i] for i in positions]
            data = frame[list(columns)] if reads_rows else frame.head(0)
            found = self._run_group(table, data, group, parameters)
            checked |= dict(zip(positions, found, strict=True))
        return [checked[i] for i in range(len(checks))]

    def _run_group(
        self, table: str, frame: pd.DataFrame, checks: list[Check], parameters: dict[str, Any]
    ) -> list[Checked]:
        batch = self.batch(table, frame)
        summary = batch.validate(self.suite(table, checks, parameters), result_format="SUMMARY")
        found = {r.expectation_config.meta["check"]: r for r in summary.results}
        retry = [
            i
            for i, c in enumerate(checks)
            if c.severity == "row" and not found[i].success and not _error(found[i])
        ]
        rows: dict[int, pd.Index] = {}
        if retry:
            complete = batch.validate(
                self.suite(table, [checks[i] for i in retry], parameters),
                result_format={"result_format": "COMPLETE", "exclude_unexpected_values": True},
            )
            for result in complete.results:
                position = retry[result.expectation_config.meta["check"]]
                rows[position] = pd.Index(result.result["unexpected_index_list"], dtype="int64")
        return [
            Checked(
                check,
                bool(found[i].success),
                found[i].result.get("unexpected_count"),
                _observed(found[i]),
                rows.get(i, pd.Index([], dtype="int64")),
            )
            for i, check in enumerate(checks)
        ]


def _error(result: Any) -> str | None:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return info.get("exception_message")
    nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return nested[0].get("exception_message") if nested else None


def _observed(result: Any) -> str:
    error = _error(result)
    if error:
        return f"error: {error.splitlines()[0]}"
    found = result.result
    mismatched = found.get("details", {}).get("mismatched")
    if mismatched is not None:  # the schema check: the columns it misses
        return json.dumps({"missing": mismatched.get("missing", [])})
    if "observed_value" in found:
        return json.dumps(found["observed_value"], default=str)
    if found.get("unexpected_count"):
        sample = found.get("partial_unexpected_list", [])[:5]
        return json.dumps(
            {"unexpected_percent": round(found.get("unexpected_percent", 0), 4), "sample": sample},
            default=str,
            ensure_ascii=False,
        )
    return ""


@dataclass
class Verdict:
    """What passed the gate, what waits in quarantine, and what every expectation found."""

    frames: dict[str, pd.DataFrame]
    quarantine: pd.DataFrame
    results: pd.DataFrame
    newest_updated_at: dict[str, pd.Timestamp]
    refusals: list[str]

    @property
    def rows_quarantined(self) -> int:
        return len(self.quarantine)


def check_frame(
    name: str,
    typed: dict[str, pd.DataFrame],
    unparsed: dict[str, pd.Series],
    references: dict[str, str],
    known_keys: dict[str, pd.Series],
    rules: QualityRules,
) -> pd.DataFrame:
    """The frame GX validates: the typed table plus the derived columns its checks compare."""
    frame = typed[name]
    derived: dict[str, pd.Series] = {"unparsed_values": unparsed[name]}
    for column, target in references.items():
        if column in frame:
            derived[f"unresolved_{column}"] = unresolved(frame[column], known_keys[target])
    if name in OPPORTUNITY_CHILDREN and {"opportunity_id", "changed_at"} <= set(frame):
        derived["earliest_allowed_at"] = earliest_allowed_at(
            frame, typed["opportunities"], pd.Timedelta(rules.history_tolerance)
        )
        if name == "stage_history" and "to_stage" in frame:
            derived["previous_to_stage"] = previous_to_stage(frame)
    frame = frame.assign(**derived)
    # GX compares datetime64[ns] columns vectorised and any other unit row by row
    times = frame.select_dtypes("datetime").columns
    return frame.astype(dict.fromkeys(times, "datetime64[ns]"))


def prepare(
    raw: dict[str, pd.DataFrame],
    warehouse_state: dict[str, pd.DataFrame],
    suites: Suites,
    rules: QualityRules,
    source_timezone: str,
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], dict[str, pd.Series]]:
    """Typed frames, the frames GX validates, and the keys the warehouse already holds."""
    typed, unparsed = {}, {}
    for name, table in TABLES.items():
        typed[name], unparsed[name] = typed_frame(table, raw[name], source_timezone)
    key_columns = {name: TABLES[name].key[0] for name in TABLES}
    in_warehouse = {
        name: state[key_columns[name]]
        for name, state in warehouse_state.items()
        if key_columns[name] in state
    }
    known = {
        name: pd.concat([in_warehouse.get(name, pd.Series(dtype="str")), frame[key]])
        if (key := key_columns[name]) in frame
        else in_warehouse.get(name, pd.Series(dtype="str"))
        for name, frame in typed.items()
    }
    check_frames = {
        name: check_frame(name, typed, unparsed, suites.references[name], known, rules)
        for name in TABLES
    }
    return typed, check_frames, in_warehouse


def _record_keys(table: CanonicalTable, frame: pd.DataFrame) -> pd.Series:
    """The key as one text; a row without a full key is named by its position instead."""
    parts = [frame[k].astype("str") for k in table.key if k in frame]
    key = parts[0]
    for part in parts[1:]:
        key = key + " | " + part
    return key.fillna("(no key) row " + frame.index.astype("str").to_series(index=frame.index))


@contextmanager
def _validating(validator: Validator | None) -> Iterator[Validator]:
    """The given validator, or one made for this gate and released after it."""
    if validator is not None:
        yield validator
        return
    own = Validator()
    try:
        yield own
    finally:
        own.release()


def gate(
    raw: dict[str, pd.DataFrame],
    *,
    live_opportunity_ids: pd.Series | None,
    warehouse_state: dict[str, pd.DataFrame],
    previous_counts: dict[str, int],
    read_in_full: set[str],
    rules: QualityRules,
    source_timezone: str,
    now: datetime,
    suites: Suites | None = None,
    validator: Validator | None = None,
) -> Verdict:
    """Validate one run's extracted frames: pass, quarantine, or refuse (in `refusals`)."""
    suites = suites or Suites.load()
    parameters = rules.parameters(now)
    typed, check_frames, in_warehouse = prepare(
        raw, warehouse_state, suites, rules, source_timezone
    )

    checked: list[Checked] = []
    found = []
    with _validating(validator) as checker:
        for name in TABLES:
            frame = check_frames[name]
            enough_before = previous_counts.get(name, 0) >= rules.min_rows_before_empty
            min_rows = 1 if name in read_in_full and enough_before else 0
            results = checker.run(
                name, frame, suites.checks[name], parameters | {"min_rows": min_rows}
            )
            checked += results
            for result in results:
                if len(result.failing_rows):
                    rows = frame.loc[result.failing_rows]
                    reasons = _reasons(result.check, rows)
                    found.append(failures(name, result.failing_rows, reasons))
        if live_opportunity_ids is not None:
            enough = previous_counts.get("opportunities", 0) >= rules.min_rows_before_empty
            checked += checker.run(
                LIVE_KEYS,
                live_opportunity_ids.to_frame("opportunity_id"),
                suites.checks[LIVE_KEYS],
                parameters | {"min_rows": int(enough)},
            )

    del check_frames  # their derived and nanosecond columns, before the passed rows are copied
    refusals = [
        _refusal(c, typed) for c in checked if c.check.severity == "table" and not c.success
    ]
    refusals += [_refusal(c, typed) for c in checked if c.check.severity == "row" and _is_error(c)]
    newest_updated_at = {
        name: frame.updated_at.max()
        for name, frame in typed.items()
        if "updated_at" in frame and frame.updated_at.notna().any()
    }
    if refusals:  # the run stops: no rows to sort into passed and held
        refusals = _unmapped_stages(typed, rules.stages) + refusals
        return Verdict({}, _no_quarantine(), _result_rows(checked), newest_updated_at, refusals)
    failing = pd.concat(found, ignore_index=True) if found else failures("", pd.Index([]), "")
    failing = held_back(typed, failing, suites.references, in_warehouse)
    quarantine, frames = [], {}
    for name, table in TABLES.items():
        rows = failing[failing.table.eq(name)]
        held = pd.Index(rows.row.unique())
        size = max(len(typed[name]), previous_counts.get(name, 0))
        if len(held) > rules.max_failing_share * size and len(held) >= rules.min_failing_rows:
            refusals.append(
                f"{name}: {len(held):,} of {size:,} rows fail "
                f"(more than quality.max_failing_share {rules.max_failing_share:.0%}): "
                + "; ".join(rows.reason.drop_duplicates().head(3))
            )
        frames[name] = typed[name].drop(index=held).reset_index(drop=True)
        if len(held):
            quarantine.append(_quarantine_rows(table, typed[name], raw[name], rows))
    if refusals:
        refusals = _unmapped_stages(typed, rules.stages) + refusals
    return Verdict(
        frames=frames,
        quarantine=pd.concat(quarantine, ignore_index=True) if quarantine else _no_quarantine(),
        results=_result_rows(checked),
        newest_updated_at=newest_updated_at,
        refusals=refusals,
    )


def _unmapped_stages(typed: dict[str, pd.DataFrame], stages: tuple[str, ...]) -> list[str]:
    """When a run stops, the CRM's stage names no configured stage or mapping covers, most
    used first: the usual first-run mistake with a CRM, said in one place."""
    columns = [("opportunities", "stage"), ("stage_history", "to_stage")]
    present = [typed[table][column] for table, column in columns if column in typed[table]]
    if not present:
        return []
    names = pd.concat(present, ignore_index=True).dropna()
    unmapped = names[~names.isin(stages)].value_counts()
    if unmapped.empty:
        return []
    listed = ", ".join(f"{name!r} ({count:,} rows)" for name, count in unmapped.items())
    return [
        f"stages that need a mapping: {listed}; map each to one of "
        f"{', '.join(stages)} in source.stage_mapping (CRM stage: configured stage)"
    ]


def _reasons(check: Check, rows: pd.DataFrame) -> list[str]:
    """The check's reason for each failing row, with the row's values filled in."""
    if not check.reason:
        return [check.name] * len(rows)
    values = rows.astype(object).where(rows.notna(), None)
    return [check.reason.format_map(row) for row in values.to_dict("records")]


def _is_error(result: Checked) -> bool:
    return result.observed.startswith("error:")


def _refusal(result: Checked, typed: dict[str, pd.DataFrame]) -> str:
    check = result.check
    text = f"{check.table}: {check.name} failed"
    if check.reason:
        text += f" ({check.reason})"
    if _is_error(result):
        return f"{text}: {result.observed}"
    if result.unexpected_count:
        text += f": {result.unexpected_count:,} rows"
    if check.expect.endswith("_to_be_unique"):
        frame = typed[check.table]
        key = list(TABLES[check.table].key)
        duplicated = frame.loc[frame.duplicated(key, keep=False), key].drop_duplicates()
        sample = _record_keys(TABLES[check.table], duplicated).head(5).tolist()
        text += ", e.g. " + ", ".join(sample)
    elif check.expect == SCHEMA_CHECK:
        text += ": " + ", ".join(json.loads(result.observed)["missing"])
    elif result.observed and check.expect == "expect_table_row_count_to_be_between":
        text += f": {result.observed} rows"
    return text


def _quarantine_rows(
    table: CanonicalTable, typed: pd.DataFrame, raw: pd.DataFrame, rows: pd.DataFrame
) -> pd.DataFrame:
    reasons = rows.groupby("row", sort=True).reason.agg(lambda r: "; ".join(dict.fromkeys(r)))
    held = typed.loc[reasons.index]
    record_key = _record_keys(table, held)
    # what the next run reads again: the deal for its history, the row itself otherwise
    if table.name in OPPORTUNITY_CHILDREN:
        retry_key = held.opportunity_id
    else:
        retry_key = held[table.key[0]] if len(table.key) == 1 else record_key
    records = raw.reset_index(drop=True).loc[reasons.index].astype(object)
    return pd.DataFrame(
        {
            "table_name": table.name,
            "record_key": record_key.to_numpy(),
            "retry_key": retry_key.to_numpy(),
            "reasons": reasons.to_numpy(),
            "record": [
                json.dumps(r, default=str, ensure_ascii=False)
                for r in records.where(records.notna(), None).to_dict("records")
            ],
        }
    )


def _no_quarantine() -> pd.DataFrame:
    return pd.DataFrame(
        {
            c: pd.Series(dtype="str")
            for c in ("table_name", "record_key", "retry_key", "reasons", "record")
        }
    )


def _result_rows(checked: list[Checked]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "table_name": [c.check.table for c in checked],
            "expectation": [c.check.name for c in checked],
            "severity": [c.check.severity for c in checked],
            "success": [c.success for c in checked],
            "unexpected_count": pd.array([c.unexpected_count for c in checked], dtype="Int64"),
            "observed": [c.observed for c in checked],
        }
    )


def quality_summary(verdict: Verdict) -> str:
    """The night's checks in markdown for the Prefect UI: failures first, then the count."""
    results = verdict.results
    failed = results[~results.success]
    lines = [
        "# loudou data-quality checks",
        "",
        f"- expectations evaluated: {len(results):,}; failed: {len(failed):,}",
        f"- rows quarantined: {verdict.rows_quarantined:,}",
    ]
    if len(failed):
        lines += [
            "",
            "| table | expectation | severity | rows | observed |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.table_name} | {r.expectation} | {r.severity} | "
            f"{'' if pd.isna(r.unexpected_count) else r.unexpected_count} | {r.observed} |"
            for r in failed.itertuples()
        ]
    if verdict.rows_quarantined:
        reasons = verdict.quarantine.groupby("table_name").size()
        lines += [
            "",
            "Quarantined per table: " + ", ".join(f"{t} {n:,}" for t, n in reasons.items()),
        ]
    return "\n".join(lines)


def build_data_docs(
    raw: dict[str, pd.DataFrame],
    *,
    rules: QualityRules,
    source_timezone: str,
    now: datetime,
    project_dir: Path,
    suites: Suites | None = None,
) -> Path:
    """Validate full extracts in a GX file context under `project_dir` and build its Data
    Docs (suites and results); returns the index.html to open."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    from loudou.data_docs import make_offline

    suites = suites or Suites.load()
    context = gx.get_context(mode="file", project_root_dir=project_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_or_update_pandas("loudou")
    _, check_frames, _ = prepare(raw, {}, suites, rules, source_timezone)
    parameters = rules.parameters(now) | {"min_rows": 0}
    for name, frame in check_frames.items():
        checks = runnable(suites.checks[name], frame)
        suite = context.suites.add_or_update(
            gx.ExpectationSuite(
                name=name,
                expectations=[c.expectation(parameters, i) for i, c in enumerate(checks)],
            )
        )
        asset = next((a for a in source.assets if a.name == name), None) or (
            source.add_dataframe_asset(name)
        )
        batch = (
            asset.batch_definitions[0]
            if asset.batch_definitions
            else (asset.add_batch_definition_whole_dataframe(name))
        )
        validation = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"loudou-{name}",
                validation_definitions=[validation],
                actions=[UpdateDataDocsAction(name="data-docs")],
            )
        )
        checkpoint.run(batch_parameters={"dataframe": frame})
    index = Path(context.get_docs_sites_urls()[0]["site_url"].removeprefix("file://"))
    make_offline(index.parent)
    return index
