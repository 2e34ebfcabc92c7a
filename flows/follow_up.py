"""The morning follow-up mails: one per rep with deals to act on, each exactly once a day.
Opt-in: nothing is sent unless loudou.yaml sets digest.follow_up_mail."""

from __future__ import annotations

from datetime import date
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from flows.backfill import days_already_built
from flows.digest import file_slug, report_deliveries, smtp_password
from loudou.config import Settings, load_settings
from loudou.digest import DigestError, Recipient
from loudou.follow_up import follow_up_lists, newest_list_day, render_follow_up
from loudou.outbox import Outbox, Outgoing, bad_address, send_through
from loudou.warehouse import open_warehouse


@flow(name="morning-follow-up", log_prints=True)
def morning_follow_up(
    config: str = "loudou.yaml",
    day: date | None = None,
    dry_run: bool = False,
    out: str | None = None,
) -> dict[str, str]:
    """Mail each rep their follow-up list of `day` (default: the newest the nightly built)
    through the outbox, or with `dry_run` write each as .html, .txt and .eml into `out`."""
    settings = load_settings(config)
    logger = get_run_logger()
    if not settings.digest.follow_up_mail and not dry_run:
        logger.info("digest.follow_up_mail is off in %s: no follow-up mails", config)
        return {}
    warehouse = open_warehouse(settings.warehouse.url)
    warehouse.ensure_schema()
    today = pd.Timestamp.now(tz=settings.timezone).date()
    if day is None:
        day = newest_list_day(warehouse, today)
    elif not days_already_built(settings.warehouse.url, [day]):
        # an empty list would read as nothing to do
        raise DigestError(
            f"follow-up: no run has built the lists of {day}; build them with "
            f"`loudou backfill --start {day} --end {day}`"
        )
    language = settings.digest.language
    mails = [
        Outgoing(rep, partial(_message, rep, deals, day, settings, language))
        for rep, deals in follow_up_lists(warehouse, day)
    ]
    if dry_run:
        results = write_files(mails, Path(out or "follow-ups"))
    else:
        outbox = Outbox(warehouse, "follow_up_outbox", "as_of_date")
        password = smtp_password(settings)
        smtp = settings.digest.smtp
        results = send_through(outbox, day, language, mails, smtp, password, "follow-up mail")
    report_deliveries(
        results,
        key="morning-follow-up",
        title=f"Follow-up mails, {day}",
        failure=("follow-up", "mails", "follow_up_outbox"),
    )
    logger.info("follow-up mails for %s: %d reps", day, len(results))
    return results


def _message(
    rep: Recipient, deals: list[dict[str, Any]], day: date, settings: Settings, language: str
) -> EmailMessage:
    mail = render_follow_up(rep, deals, day, settings, language)
    return mail.message(settings.digest.sender, day, settings.timezone, kind="follow-up")


def write_files(mails: list[Outgoing], folder: Path) -> dict[str, str]:
    """--dry-run: each rep's mail as .eml, with its HTML and text beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {}
    for mail in mails:
        slug = file_slug(mail.recipient)
        try:
            message = mail.message()
        except ValueError as exc:  # an address no header can carry
            results[mail.recipient.address] = f"failed: {bad_address(mail.recipient, exc)}"
            continue
        text, html = (part.get_content() for part in message.get_payload())
        (folder / f"{slug}.txt").write_text(text, encoding="utf-8")
        (folder / f"{slug}.html").write_text(html, encoding="utf-8")
        (folder / f"{slug}.eml").write_bytes(bytes(message))
        results[mail.recipient.address] = f"written to {folder / slug}.html"
    return results
