"""The benchmark runs end to end at a small scale, so it cannot rot (timings not asserted)."""

from __future__ import annotations

from bench.run import run, table
from loudou.catalog import TABLES, sql_tables

PHASES = ("extract", "validate", "transform", "load")


def test_the_benchmark_measures_every_phase(prefect_server, tmp_path):
    # scale 1 as the issue asks: 10,000 opportunities (the backfill two days of it)
    results = run(scale=1, backfill_scale=1, backfill_days=2, folder=tmp_path)
    phases = results["phases_seconds"]
    for phase in (
        "generate",
        "write_source",
        "floor",
        "full_extract",
        "full_validate",
        "full_transform",
        "full_load",
        "incremental_extract",
        "incremental_validate",
        "incremental_transform",
        "incremental_load",
        "digests",
    ):
        assert phases[phase] > 0, phase
    peaks = results["peak_rss_mb_by_phase"]
    nightly = [f"{night}_{p}" for night in ("full", "incremental") for p in PHASES]
    assert set(peaks) == {*nightly, "digests"}
    assert all(peaks[phase] > 0 for phase in peaks)
    assert results["peak_rss_mb"] == max(peaks.values())
    assert results["rows"]["opportunities"] == 10_000
    assert results["changed_opportunities"] >= 1
    assert results["digests_rendered"] >= 2
    assert results["backfill"]["days"] == results["backfill"]["built"] == 2
    # the default runner.nightly_threads in the phases; both settings in processes of their own
    assert results["nightly_threads"] == 1
    assert [alone["threads"] for alone in results["transform_alone"]] == [1, 2]
    assert all(a["seconds"] > 0 and a["peak_rss_mb"] > 0 for a in results["transform_alone"])
    assert results["monte_carlo"]["deals"] == 10_000 and results["monte_carlo"]["draws"] == 10_000
    assert results["monte_carlo"]["peak_rss_mb"] > 0
    printed = table(results)
    assert "full refresh / floor" in printed
    # every table's seconds, the SQL-made ones too, slowest first
    every_table = {spec.name for spec in TABLES if not spec.scratch}
    for night in ("full", "incremental"):
        seconds = results[f"{night}_table_seconds"]
        assert set(seconds) == every_table
        assert list(seconds.values()) == sorted(seconds.values(), reverse=True)
    assert all(f"  {spec.name} " in printed for spec in sql_tables())
