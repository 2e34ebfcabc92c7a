"""The `loudou` command."""

from __future__ import annotations

import os
import traceback
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from loudou.errors import LoudouError

if TYPE_CHECKING:  # the config loads lazily, after the arguments are read
    from loudou.config import Settings

app = typer.Typer(
    help="漏斗 loudou: sales-funnel pipelines from a CRM into a warehouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
run_app = typer.Typer(help="Run a flow now.", no_args_is_help=True)
app.add_typer(run_app, name="run")
dq_app = typer.Typer(help="Data-quality checks (Great Expectations).", no_args_is_help=True)
app.add_typer(dq_app, name="dq")
forecast_app = typer.Typer(help="Forecasts and how far to trust them.", no_args_is_help=True)
app.add_typer(forecast_app, name="forecast")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Path to loudou.yaml.")]
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "loudou.example.yaml"
# days the demo builds before its night, so that the last whole week has its digest
HISTORY_DAYS = 14


_verbose = False


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Show Prefect's logs and an error's traceback."),
    ] = False,
) -> None:
    """Settings every command shares, made before Prefect or Great Expectations load."""
    global _verbose
    _verbose = verbose
    # no telemetry from a machine that may have no internet (each attempt logs an error)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    if not verbose:
        # Prefect's logs go to the run log (the Prefect UI), not to the terminal, where a
        # problem is one line (--verbose shows them)
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        warnings.simplefilter("ignore")


def _failing_step(exc: BaseException) -> str:
    """Where in loudou's own code an unexpected error was raised: `file (function)`."""
    root = Path(__file__).resolve().parents[1]
    step = ""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(root) and ".venv" not in path.parts:
            step = f"{path.relative_to(root)} ({frame.f_code.co_name})"
    return step


def _fail(exc: BaseException) -> None:
    """One line per mistake for errors we expect; one line for anything else too."""
    from loudou.config import mask_secrets

    lines = str(exc).splitlines() or [type(exc).__name__]
    if not isinstance(exc, LoudouError):
        step = _failing_step(exc)
        where = f" in {step}" if step else ""
        lines = [f"{type(exc).__name__}{where}: {lines[0]} (--verbose shows the traceback)"]
    if _verbose:
        traceback.print_exception(exc)
    for line in lines:
        typer.echo(f"loudou: error: {mask_secrets(line)}", err=True)
    raise typer.Exit(code=1)


def _parse_date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise LoudouError(f"{option}: {value!r} is not a date (use YYYY-MM-DD)") from None


@app.command("config")
def check_config(
    config: ConfigOption = Path("loudou.yaml"),
    check: Annotated[
        bool, typer.Option("--check", help="Connect to the source, warehouse and SMTP server.")
    ] = False,
) -> None:
    """Validate loudou.yaml and print what it connects to (without passwords); with --check,
    connect to each and say in one line whether it is ready (exit 1 if one is not)."""
    from loudou.config import load_settings, redact_url

    try:
        settings = load_settings(config)
    except Exception as exc:
        _fail(exc)
    typer.echo(f"source:    {settings.source.kind} {redact_url(settings.source.url)}")
    typer.echo(f"warehouse: {redact_url(settings.warehouse.url)}")
    for pipeline in settings.pipelines:
        typer.echo(
            f"pipeline {pipeline.name}: "
            + " › ".join(pipeline.open_stage_names)
            + f" › {pipeline.won_stage}"
        )
    smtp = settings.digest.smtp
    if smtp.password_env and smtp.password_env not in os.environ:
        typer.echo(f"note: {smtp.password_env} (digest.smtp.password_env) is not set")
    if not check:
        return
    from loudou.readiness import check_ready

    results = check_ready(settings)
    for part, ready, line in results:
        typer.echo(f"{part + ':':<10} {'ready' if ready else 'NOT READY'}: {line}")
    if not all(ready for _, ready, _ in results):
        raise typer.Exit(code=1)


@run_app.command("nightly")
def run_nightly(
    config: ConfigOption = Path("loudou.yaml"),
    as_of: Annotated[
        str | None, typer.Option(help="Day to report on (default: yesterday).")
    ] = None,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Re-read everything.")
    ] = False,
) -> None:
    """Extract, transform and load once."""
    try:
        summary = _nightly(config, _parse_date(as_of, "--as-of"), full_refresh)
    except Exception as exc:
        _fail(exc)
    _print_summary(summary)


def _nightly(config: Path, as_of: date | None, full_refresh: bool) -> dict:
    from loudou.config import load_settings

    settings = load_settings(config)  # refuse a bad config before Prefect starts
    from flows.nightly import nightly
    from flows.tasks import check_as_of

    if as_of is not None:
        check_as_of(as_of, settings.timezone)

    return nightly(config=str(config), as_of=as_of, full_refresh=full_refresh)


def _print_summary(summary: dict) -> None:
    typer.echo(f"\nnightly run {summary['run_id']} ({summary['mode']}, as of {summary['as_of']})")
    if summary["current_state"] != "rebuilt":
        typer.echo(
            f"a past day: its slices only; fct_opportunity and the other current-state tables "
            f"stay {summary['current_state']}"
        )
    typer.echo(f"{'table':<24}{'extracted':>10}")
    for name, count in summary["extracted"].items():
        typer.echo(f"  {name:<22}{count:>10,}")
    typer.echo(f"{'warehouse table':<24}{'rows':>10}")
    for name, count in summary["loaded"].items():
        typer.echo(f"  {name:<22}{count:>10,}")


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="First day to rebuild, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last day to rebuild, YYYY-MM-DD (inclusive).")],
    force: Annotated[bool, typer.Option("--force", help="Rebuild days already built.")] = False,
    config: ConfigOption = Path("loudou.yaml"),
) -> None:
    """Rebuild snapshots and marts day by day, as they would have been on each day."""
    try:
        from loudou.config import load_settings

        settings = load_settings(config)
        first, last = _parse_date(start, "--start"), _parse_date(end, "--end")
        import pandas as pd

        from flows.backfill import backfill as backfill_flow
        from flows.backfill import backfill_days

        # refuse a bad range before Prefect starts
        backfill_days(first, last, pd.Timestamp.now(tz=settings.timezone).date())
        result = backfill_flow(config=str(config), start=first, end=last, force=force)
    except Exception as exc:
        _fail(exc)
    typer.echo(
        f"backfill {start} to {end}: {len(result['built'])} days built, "
        f"{len(result['skipped'])} skipped"
    )


@app.command()
def digest(
    config: ConfigOption = Path("loudou.yaml"),
    week: Annotated[str | None, typer.Option(help="Monday of the week (default: last).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write files, send nothing.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Folder for --dry-run files (default: digests).")
    ] = None,
) -> None:
    """Send each manager's weekly digest (or, with --dry-run, write .html, .txt and .eml)."""
    try:
        from loudou.config import load_settings

        settings = load_settings(config)
        week_start = _parse_date(week, "--week")
        if week_start is not None and week_start.weekday() != 0:
            raise LoudouError(f"--week: {week_start} is a {week_start:%A}; give the Monday")
        if out is not None and not dry_run:
            raise LoudouError("--out is where --dry-run writes: add --dry-run, or drop --out")
        from flows.digest import weekly_digest

        week_start = _digest_week(config, week_start)
        if not dry_run:
            _check_smtp_password(settings, "digests")
        typer.echo(f"the week of {week_start}")
        results = weekly_digest(
            config=str(config),
            week_start=week_start,
            dry_run=dry_run,
            out=str(out or "digests"),
        )
    except Exception as exc:
        _fail(exc)
    for who, what in results.items():
        typer.echo(f"{who}: {what}")


@app.command("follow-up")
def follow_up(
    config: ConfigOption = Path("loudou.yaml"),
    day: Annotated[
        str | None, typer.Option(help="The day of the lists (default: the newest built).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write files, send nothing.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Folder for --dry-run files (default: follow-ups).")
    ] = None,
) -> None:
    """Mail each rep the deals to follow up today (digest.follow_up_mail must be on), or
    with --dry-run write each mail as .html, .txt and .eml."""
    try:
        from loudou.config import load_settings

        settings = load_settings(config)
        list_day = _parse_date(day, "--day")
        switch = ("digest.follow_up_mail", settings.digest.follow_up_mail)
        _check_sending(config, settings, dry_run, out, switch, "mails")
        from flows.follow_up import morning_follow_up

        results = morning_follow_up(
            config=str(config), day=list_day, dry_run=dry_run, out=str(out or "follow-ups")
        )
    except Exception as exc:
        _fail(exc)
    for who, what in results.items():
        typer.echo(f"{who}: {what}")


@app.command()
def alerts(
    config: ConfigOption = Path("loudou.yaml"),
    day: Annotated[
        str | None, typer.Option(help="The day the alerts were raised (default: the newest built).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Write files, send nothing.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Folder for --dry-run files (default: alerts).")
    ] = None,
) -> None:
    """Mail each manager the stage-conversion alerts raised in their scope, and post them to
    the chat webhook (alerts.conversion must be on), once; or with --dry-run write the mails."""
    try:
        from loudou.config import load_settings

        settings = load_settings(config)
        alert_day = _parse_date(day, "--day")
        switch = ("alerts.conversion", settings.alerts.conversion)
        _check_sending(config, settings, dry_run, out, switch, "alerts")
        from flows.alerts import conversion_alerts

        results = conversion_alerts(
            config=str(config), day=alert_day, dry_run=dry_run, out=str(out or "alerts")
        )
    except Exception as exc:
        _fail(exc)
    if not results:
        typer.echo("no alert sent: none raised, or quiet hours (alerts.quiet_hours)")
    for who, what in results.items():
        typer.echo(f"{who}: {what}")


def _check_sending(
    config: Path,
    settings: Settings,
    dry_run: bool,
    out: Path | None,
    switch: tuple[str, bool],
    mails: str,
) -> None:
    """Before Prefect starts: --out goes with --dry-run, and sending needs its switch (the
    key of loudou.yaml, and whether it is on) and the SMTP password."""
    if out is not None and not dry_run:
        raise LoudouError("--out is where --dry-run writes: add --dry-run, or drop --out")
    if dry_run:
        return
    key, on = switch
    if not on:
        raise LoudouError(
            f"{key} is off in {config}: turn it on to send the {mails}, "
            "or write them with --dry-run"
        )
    _check_smtp_password(settings, mails)


def _check_smtp_password(settings: Settings, mails: str) -> None:
    """Before Prefect starts: sending needs the password the config names."""
    password_env = settings.digest.smtp.password_env
    if password_env and password_env not in os.environ:
        raise LoudouError(
            f"digest.smtp.password_env: environment variable {password_env} is not set "
            f"(set it, or write the {mails} with --dry-run)"
        )


def _digest_week(config: Path, requested: date | None) -> date:
    """The week a digest reports (see flows.digest.pick_week), found before Prefect starts."""
    import pandas as pd

    from flows.digest import pick_week
    from loudou.config import load_settings
    from loudou.warehouse import open_warehouse

    settings = load_settings(config)
    warehouse = open_warehouse(settings.warehouse.url)
    warehouse.ensure_schema()
    today = pd.Timestamp.now(tz=settings.timezone).date()
    return pick_week(warehouse, str(config), requested, today)


@dq_app.command("docs")
def dq_docs(
    config: ConfigOption = Path("loudou.yaml"),
    out: Annotated[Path, typer.Option(help="The GX project folder to build into.")] = Path(
        "dq-docs"
    ),
) -> None:
    """Check the whole source against the suites now and build GX Data Docs to open."""
    from loudou.canonical import TABLES
    from loudou.config import load_settings
    from loudou.quality import QualityRules, build_data_docs
    from loudou.source import SourceSpec, check_connection, read_raw

    try:
        settings = load_settings(config)
        spec = SourceSpec.from_settings(settings)
        check_connection(spec)
        index = build_data_docs(
            {name: read_raw(spec, name) for name in TABLES},
            rules=QualityRules.from_settings(settings),
            source_timezone=settings.source.timezone,
            now=datetime.now(UTC).replace(tzinfo=None, microsecond=0),
            project_dir=out.resolve(),
        )
    except Exception as exc:
        _fail(exc)
    typer.echo(f"data docs: {index}")


@forecast_app.command("backtest")
def forecast_backtest(
    config: ConfigOption = Path("loudou.yaml"),
    periods: Annotated[int, typer.Option(min=1, help="How many closed months to replay.")] = 6,
    as_of: Annotated[str | None, typer.Option(help="Replay from this date (YYYY-MM-DD).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write every scored case here (CSV).")] = None,
) -> None:
    """Replay the forecasts of past months from history and score them per method and lead."""

    from flows.tasks import RunPlan, backtest, default_as_of, read_state
    from loudou.config import load_settings
    from transforms.forecast import backtest_summary

    try:
        plan = RunPlan.from_settings(load_settings(config))
        day = _parse_date(as_of, "--as-of") or default_as_of(plan.timezone)
        cases = backtest(read_state.fn(plan.warehouse_url), plan, day, periods)
    except Exception as exc:
        _fail(exc)
    if out:
        cases.to_csv(out, index=False)
    summary = backtest_summary(cases)
    typer.echo(f"forecast backtest: {periods} months before {day}, {len(cases):,} scored cases")
    typer.echo(
        summary.to_string(
            index=False,
            float_format=lambda v: f"{v:.3f}",
            na_rep="",
        )
    )


@app.command()
def serve(
    config: ConfigOption = Path("loudou.yaml"),
    port: Annotated[
        int, typer.Option(help="Port of the local Prefect server serve starts.")
    ] = 4200,
    server_log: Annotated[
        Path, typer.Option(help="Where the local Prefect server's log goes.")
    ] = Path("prefect-server.log"),
) -> None:
    """Run the nightly and weekly schedules of loudou.yaml on this machine, against the
    configured Prefect server (PREFECT_API_URL) or a local one it starts (UI included)."""
    try:
        from flows.serve import serve_schedules

        serve_schedules(str(config), port, server_log.resolve())
    except Exception as exc:
        _fail(exc)
    typer.echo("loudou serve: stopped", err=True)


@app.command()
def simulate(
    url: Annotated[str, typer.Option(help="SQLAlchemy URL to write the CRM to (replaced).")],
    scale: Annotated[float, typer.Option(help="1 ≈ 10,000 opportunities.")] = 1.0,
    seed: int = 7,
    now: Annotated[str | None, typer.Option(help="The CRM's clock, YYYY-MM-DDTHH:MM.")] = None,
    truth: Annotated[Path | None, typer.Option(help="Write the planted cases here.")] = None,
    config: ConfigOption = EXAMPLE_CONFIG,
) -> None:
    """Write a realistic CRM in the native schema to any database."""
    from loudou.config import load_settings, redact_url
    from loudou.simulator import simulate as generate
    from loudou.simulator import write_crm, write_truth

    try:
        settings = load_settings(config)
        moment = datetime.fromisoformat(now) if now else None
        crm = generate(
            settings.pipeline(), scale=scale, seed=seed, now=moment, thresholds=settings.thresholds
        )
        counts = write_crm(crm, os.path.expandvars(url))
    except Exception as exc:
        _fail(exc)
    if truth:
        write_truth(crm, truth)
    typer.echo(f"wrote {redact_url(url)}: " + ", ".join(f"{n} {c:,}" for n, c in counts.items()))


@app.command()
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo files go.")] = Path(
        "demo"
    ),
    scale: float = 1.0,
    seed: int = 7,
) -> None:
    """Generate a CRM into SQLite, run the nightly flow into DuckDB, print what it built."""
    import pandas as pd

    from loudou.config import load_settings
    from loudou.paths import SQL_DIR
    from loudou.simulator import simulate as generate
    from loudou.simulator import write_crm, write_truth
    from loudou.warehouse import open_warehouse

    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "loudou.yaml"
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    config.write_text(
        text.replace("sqlite:///demo/", "sqlite:///").replace("duckdb:///demo/", "duckdb:///"),
        encoding="utf-8",
    )
    (directory / "warehouse.duckdb").unlink(missing_ok=True)
    try:
        settings = load_settings(config)
        from flows.nightly import default_as_of

        as_of = default_as_of(settings.timezone)
        # the CRM's clock stops on the evening of the day the run reports on
        now = datetime.combine(as_of, datetime.min.time()).replace(hour=9)
        typer.echo(f"generating a CRM (scale {scale}) into {directory / 'crm.sqlite'} ...")
        crm = generate(
            settings.pipeline(), scale=scale, seed=seed, now=now, thresholds=settings.thresholds
        )
        write_crm(crm, settings.source.url)
        write_truth(crm, directory / "truth.json")
        summary = _nightly(config, as_of, True)
        # two weeks of history, so that the last whole week has its digest
        from flows.backfill import backfill as backfill_flow

        typer.echo(f"building the {HISTORY_DAYS} days before {as_of} (a backfill) ...")
        backfill_flow(
            config=str(config),
            start=as_of - timedelta(days=HISTORY_DAYS),
            end=as_of - timedelta(days=1),
        )
        from flows.digest import weekly_digest

        week = _digest_week(config, None)
        written = weekly_digest(
            config=str(config), week_start=week, dry_run=True, out=str(directory / "digests")
        )
        from flows.follow_up import morning_follow_up

        follow_ups = morning_follow_up(
            config=str(config), dry_run=True, out=str(directory / "follow-ups")
        )
        from flows.alerts import conversion_alerts

        alerted = conversion_alerts(config=str(config), dry_run=True, out=str(directory / "alerts"))
    except Exception as exc:
        _fail(exc)
    _print_summary(summary)
    funnel = open_warehouse(settings.warehouse.url).query(
        (SQL_DIR / "reports" / "open_pipeline_by_stage.sql").read_text(encoding="utf-8")
    )
    with pd.option_context("display.width", 120, "display.float_format", "{:,.0f}".format):
        table = funnel.to_string(index=False)
    typer.echo(f"\nopen pipeline as of {summary['as_of']} ({settings.currency}):\n{table}")
    typer.echo(
        f"\n{len(written)} digests of the week of {week} (one per team manager and one for the "
        f"director) in {directory / 'digests'}: open the .html files in a browser"
    )
    typer.echo(
        f"{len(follow_ups)} reps' follow-up lists for the morning after {summary['as_of']} in "
        f"{directory / 'follow-ups'} (mailed each working morning when "
        "digest.follow_up_mail is on)"
    )
    typer.echo(
        f"conversion alerts raised on {summary['as_of']}: {len(alerted)} mails in "
        f"{directory / 'alerts'} (sent each morning when alerts.conversion is on)"
    )
    typer.echo(
        f"\nwarehouse: {directory / 'warehouse.duckdb'} — try:\n"
        f"  .venv/bin/loudou run nightly --config {config}   # an incremental run\n"
        f'  .venv/bin/python -c "import duckdb; '
        f"print(duckdb.connect('{directory / 'warehouse.duckdb'}').sql('FROM fct_opportunity'))\""
    )
