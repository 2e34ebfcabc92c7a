"""The weekly digest: one e-mail per manager and one for the director, each exactly once."""

from __future__ import annotations

import os
import re
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.tasks import utc_now
from loudou.config import Settings, load_settings
from loudou.digest import DigestBuilder, DigestError, Recipient, recipients, render
from loudou.errors import ConfigError
from loudou.mailer import DeliveryError, deliver
from loudou.warehouse import Warehouse, Write, open_warehouse


def last_week_start(timezone: str) -> date:
    """Monday of the week before this one: a Monday 07:00 run reports the week just ended."""
    today = pd.Timestamp.now(tz=timezone).date()
    return today - timedelta(days=today.weekday() + 7)


def smtp_password(settings: Settings) -> str | None:
    name = settings.digest.smtp.password_env
    if name is None:
        return None
    if name not in os.environ:
        raise ConfigError(f"digest.smtp.password_env: environment variable {name} is not set")
    return os.environ[name]


def outbox_row(warehouse: Warehouse, week: date, recipient: str) -> dict[str, Any] | None:
    rows = warehouse.query(
        "SELECT * FROM digest_outbox WHERE week_start = :w AND recipient = :r",
        {"w": week, "r": recipient},
    )
    return rows.iloc[0].to_dict() if len(rows) else None


def record(
    warehouse: Warehouse,
    week: date,
    recipient: str,
    language: str,
    status: str,
    attempts: int,
    error: str | None = None,
    message_id: str | None = None,
) -> None:
    """Each change of an outbox row commits on its own: nothing is marked sent that was not."""
    row = pd.DataFrame(
        [
            {
                "week_start": pd.Timestamp(week),
                "recipient": recipient,
                "language": language,
                "status": status,
                "attempts": attempts,
                "last_error": error,
                "sent_at": utc_now() if status == "sent" else None,
                "message_id": message_id,
            }
        ]
    )
    warehouse.apply([Write("digest_outbox", row, replace="keys", keys=("week_start", "recipient"))])


def _slug(recipient: Recipient) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", recipient.email or recipient.key)


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
    week = week_start or last_week_start(settings.timezone)
    if week.weekday() != 0:
        raise DigestError(f"digest: week_start {week} is not a Monday")
    language = settings.digest.language
    builder = DigestBuilder(warehouse, settings, week)
    password = None if dry_run else smtp_password(settings)
    results: dict[str, str] = {}
    with warehouse.session():
        addressees = recipients(warehouse, settings)
    for recipient in addressees:
        if dry_run:
            folder = Path(out or "digests")
            folder.mkdir(parents=True, exist_ok=True)
            slug = _slug(recipient)
            digest = render(builder, recipient, language)
            (folder / f"{slug}.html").write_text(
                digest.html_with_image_files(f"{slug}-"), encoding="utf-8"
            )
            (folder / f"{slug}.txt").write_text(digest.text, encoding="utf-8")
            for cid, png in digest.images.items():
                (folder / f"{slug}-{cid}.png").write_bytes(png)
            mail = digest.message(settings.digest.sender, week)
            (folder / f"{slug}.eml").write_bytes(bytes(mail))
            results[recipient.address] = f"written to {folder / slug}.html"
            continue
        previous = outbox_row(warehouse, week, recipient.address)
        attempts = int(previous["attempts"]) if previous else 0
        if previous and previous["status"] == "sent":
            results[recipient.address] = "already sent"
            continue
        if not recipient.email:
            error = f"no e-mail address for {recipient.name} ({recipient.key})"
            record(warehouse, week, recipient.address, language, "failed", attempts, error)
            results[recipient.address] = f"failed: {error}"
            continue
        message = render(builder, recipient, language).message(settings.digest.sender, week)
        record(warehouse, week, recipient.address, language, "pending", attempts)
        try:
            attempts += deliver(message, settings.digest.smtp, password)
        except DeliveryError as exc:
            record(
                warehouse,
                week,
                recipient.address,
                language,
                "failed",
                attempts + exc.attempts,
                str(exc),
            )
            results[recipient.address] = f"failed: {exc}"
            continue
        record(
            warehouse,
            week,
            recipient.address,
            language,
            "sent",
            attempts,
            message_id=message["Message-ID"],
        )
        results[recipient.address] = "sent"
    summary = "\n".join(f"| {who} | {what} |" for who, what in results.items())
    create_markdown_artifact(
        key="weekly-digest",
        description=f"digests for the week of {week}",
        markdown=f"# Digests, week of {week}\n\n| recipient | result |\n|---|---|\n{summary}",
    )
    failed = {who: what for who, what in results.items() if what.startswith("failed")}
    for who, what in results.items():
        get_run_logger().info("%s: %s", who, what)
    if failed:
        details = "; ".join(f"{who} {what}" for who, what in failed.items())
        raise DigestError(
            f"digest: {len(failed)} of {len(results)} digests not delivered "
            f"(see digest_outbox): {details}"
        )
    return results
