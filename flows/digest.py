"""The weekly digest: one e-mail per manager and one for the director, each exactly once."""

from __future__ import annotations

import os
import re
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from functools import partial
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from loudou.config import Settings, load_settings
from loudou.digest import DigestBuilder, DigestError, Recipient, recipients, render
from loudou.errors import ConfigError
from loudou.outbox import Outbox, Outgoing, bad_address, send_through
from loudou.warehouse import Warehouse, open_warehouse


def built_days(warehouse: Warehouse, first: date, last: date) -> set[date]:
    days = warehouse.query(
        "SELECT DISTINCT as_of_date FROM mart_funnel WHERE as_of_date BETWEEN :a AND :b",
        {"a": first, "b": last},
    )
    return {pd.Timestamp(d).date() for d in days.as_of_date}


def pick_week(warehouse: Warehouse, config: str, requested: date | None, today: date) -> date:
    """The Monday of the week to report: the one asked for, or the latest whole week the
    warehouse holds. A week's digest reads its Sunday's marts, or, for the week the newest
    marts fall in, those; when days are missing, one line names them and the backfill that
    builds them."""
    if requested is not None and requested + timedelta(days=6) >= today:
        raise DigestError(
            f"--week {requested}: the week ends on {requested + timedelta(days=6)}, "
            f"which is not over yet (today is {today})"
        )
    newest = warehouse.query("SELECT MAX(as_of_date) AS d FROM mart_funnel").d.iat[0]
    if pd.isna(newest):
        raise DigestError(
            "digest: no nightly run has built the marts yet; run `loudou run nightly` first"
        )
    newest = pd.Timestamp(newest).date()
    if requested is None:
        sunday = newest - timedelta(days=(newest.weekday() + 1) % 7)
        requested = sunday - timedelta(days=6)
    week, week_end = requested, requested + timedelta(days=6)
    if week <= newest <= week_end:
        return week  # the marts go as far as the week's newest day
    days = [week + timedelta(days=i) for i in range(7)]
    missing = [d for d in days if d not in built_days(warehouse, week, week_end)]
    if week_end in missing:
        raise DigestError(
            f"digest: the week of {week} has no marts for {_span(missing)}: build them with "
            f"`loudou backfill --config {config} --start {missing[0]} --end {missing[-1]}`"
        )
    return week


def _span(days: list[date]) -> str:
    return str(days[0]) if len(days) == 1 else f"{days[0]} to {days[-1]} ({len(days)} days)"


def expected_newest_day(nightly_cron: str, timezone: str, now: pd.Timestamp) -> date:
    """The as-of day of the newest nightly the schedule has started by `now`: a run that
    fires on day D reports D - 1."""
    from prefect._vendor.croniter import croniter

    fired = croniter(nightly_cron, now.tz_convert(timezone).to_pydatetime()).get_prev(datetime)
    return fired.date() - timedelta(days=1)


def smtp_password(settings: Settings) -> str | None:
    name = settings.digest.smtp.password_env
    return None if name is None else secret_from_env(name, "digest.smtp.password_env")


def secret_from_env(name: str, key: str) -> str:
    """The secret held by the environment variable `name`, which loudou.yaml's `key` names."""
    if name not in os.environ:
        raise ConfigError(f"{key}: environment variable {name} is not set")
    return os.environ[name]


def file_slug(recipient: Recipient) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", recipient.email or recipient.key)


def _message(
    builder: DigestBuilder, recipient: Recipient, language: str, settings: Settings, week: date
) -> EmailMessage:
    return render(builder, recipient, language).message(
        settings.digest.sender, week, settings.timezone
    )


def write_files(
    builder: DigestBuilder,
    addressees: list[Recipient],
    language: str,
    settings: Settings,
    week: date,
    folder: Path,
) -> dict[str, str]:
    """--dry-run: each digest as .html (its charts as .png beside it), .txt and .eml."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for recipient in addressees:
        slug = file_slug(recipient)
        digest = render(builder, recipient, language)
        (folder / f"{slug}.html").write_text(
            digest.html_with_image_files(f"{slug}-"), encoding="utf-8"
        )
        (folder / f"{slug}.txt").write_text(digest.text, encoding="utf-8")
        for cid, png in digest.images.items():
            (folder / f"{slug}-{cid}.png").write_bytes(png)
        try:
            mail = digest.message(settings.digest.sender, week, settings.timezone)
        except ValueError as exc:  # an address no header can carry
            results[recipient.address] = f"failed: {bad_address(recipient, exc)}"
            continue
        (folder / f"{slug}.eml").write_bytes(bytes(mail))
        results[recipient.address] = f"written to {folder / slug}.html"
    return results


@flow(name="weekly-digest", log_prints=True)
def weekly_digest(
    config: str = "loudou.yaml",
    week_start: date | None = None,
    dry_run: bool = False,
    out: str | None = None,
) -> dict[str, str]:
    """Render each recipient's digest and send it through the outbox (or write files)."""
    settings = load_settings(config)
    warehouse = open_warehouse(settings.warehouse.url)
    warehouse.ensure_schema()
    if week_start is not None and week_start.weekday() != 0:
        raise DigestError(f"--week: {week_start} is a {week_start:%A}; give the Monday")
    now = pd.Timestamp.now(tz=settings.timezone)
    week = pick_week(warehouse, config, week_start, now.date())
    get_run_logger().info("digests of the week of %s", week)
    language = settings.digest.language
    builder = DigestBuilder(
        warehouse,
        settings,
        week,
        expected_day=expected_newest_day(settings.schedules.nightly, settings.timezone, now),
    )
    password = None if dry_run else smtp_password(settings)
    with warehouse.session():
        addressees = recipients(warehouse, settings)
    if dry_run:
        results = write_files(builder, addressees, language, settings, week, Path(out or "digests"))
    else:
        mails = [
            Outgoing(r, partial(_message, builder, r, language, settings, week)) for r in addressees
        ]
        outbox = Outbox(warehouse, "digest_outbox", "week_start")
        results = send_through(
            outbox, week, language, mails, settings.digest.smtp, password, "digest"
        )
    for who, what in results.items():
        get_run_logger().info("%s: %s", who, what)
    report_deliveries(
        results,
        key="weekly-digest",
        title=f"Digests, week of {week}",
        failure=("digest", "digests", "digest_outbox"),
    )
    return results


def report_deliveries(
    results: dict[str, str], *, key: str, title: str, failure: tuple[str, str, str]
) -> None:
    """What became of each mail, as a table in the Prefect UI; then, if any failed, one line
    that names them: (what the run is, what it sends, its outbox table)."""
    rows = "\n".join(f"| {who} | {what} |" for who, what in results.items())
    create_markdown_artifact(
        key=key, description=title, markdown=f"# {title}\n\n| to | result |\n|---|---|\n{rows}"
    )
    failed = {who: what for who, what in results.items() if what.startswith("failed")}
    if failed:
        run, mails, outbox = failure
        # an address may hold a line break: the line stays one line
        details = "; ".join(f"{who!r} {what}" for who, what in failed.items())
        raise DigestError(
            f"{run}: {len(failed)} of {len(results)} {mails} not delivered (see {outbox}): "
            f"{details}"
        )
