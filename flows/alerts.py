"""The conversion alerts: each manager whose scope had a stage-conversion flag raised gets one
mail for the day, and the chat group one message, exactly once (alert_outbox). Opt-in: nothing
is sent unless loudou.yaml sets alerts.conversion; nothing is sent in alerts.quiet_hours."""

from __future__ import annotations

from datetime import date, datetime
from email.message import EmailMessage
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from prefect import flow, get_run_logger

from flows.digest import report_deliveries, secret_from_env, smtp_password
from flows.follow_up import write_files
from loudou.alerts import (
    Alert,
    in_quiet_hours,
    newest_alert_day,
    raised_alerts,
    render_alerts,
    signed_dingtalk_url,
    webhook_payload,
    webhook_text,
)
from loudou.config import Settings, Webhook, expand_env, load_settings
from loudou.digest import DigestError, Recipient
from loudou.outbox import Outbox, Outgoing, send_through
from loudou.warehouse import open_warehouse


@flow(name="conversion-alerts", log_prints=True)
def conversion_alerts(
    config: str = "loudou.yaml",
    day: date | None = None,
    dry_run: bool = False,
    out: str | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """Send the alerts raised on `day` (default: the newest day a nightly built) that were not
    sent yet, unless `now` (default: the clock) falls in the quiet hours; with `dry_run`,
    write each mail as .html, .txt and .eml into `out` instead."""
    settings = load_settings(config)
    logger = get_run_logger()
    if not settings.alerts.conversion and not dry_run:
        logger.info("alerts.conversion is off in %s: no conversion alerts", config)
        return {}
    warehouse = open_warehouse(settings.warehouse.url)
    warehouse.ensure_schema()
    local_now = (now or datetime.now(ZoneInfo("UTC"))).astimezone(ZoneInfo(settings.timezone))
    day = day or newest_alert_day(warehouse, local_now.date())
    if day is None:
        raise DigestError("alerts: no nightly run has built a day yet; run `loudou run nightly`")
    quiet = settings.alerts.quiet_hours
    if not dry_run and in_quiet_hours(local_now, quiet):
        logger.info("alerts: quiet hours (%s): the alerts of %s wait for the next run", quiet, day)
        return {}
    language = settings.digest.language
    raised = raised_alerts(warehouse, day, settings)
    mails = [
        Outgoing(manager, partial(_message, manager, alerts, day, settings, language))
        for manager, alerts in raised
    ]
    if dry_run:
        results = write_files(mails, Path(out or "alerts"))
    else:
        outbox = Outbox(warehouse, "alert_outbox", "as_of_date")
        password = smtp_password(settings)
        smtp = settings.digest.smtp
        results = send_through(outbox, day, language, mails, smtp, password, "conversion alert")
        webhook = settings.alerts.webhook
        if webhook and raised:
            results |= post_to_chat(outbox, webhook, day, raised, settings, language)
    report_deliveries(
        results,
        key="conversion-alerts",
        title=f"Conversion alerts raised on {day}",
        failure=("alerts", "alerts", "alert_outbox"),
    )
    logger.info("conversion alerts of %s: %d recipients", day, len(results))
    return results


def _message(
    manager: Recipient, alerts: list[Alert], day: date, settings: Settings, language: str
) -> EmailMessage:
    mail = render_alerts(manager, alerts, day, settings, language)
    return mail.message(settings.digest.sender, day, settings.timezone, kind="alert")


def post_to_chat(
    outbox: Outbox,
    webhook: Webhook,
    day: date,
    raised: list[tuple[Recipient, list[Alert]]],
    settings: Settings,
    language: str,
) -> dict[str, str]:
    """The day's alerts as one chat message, posted once (its alert_outbox row)."""
    key = f"webhook:{webhook.kind}"
    previous = outbox.row(day, key)
    attempts = int(previous["attempts"]) if previous else 0
    if previous and previous["status"] == "sent":
        return {key: "already sent"}
    url = expand_env(webhook.url, "alerts.webhook.url")
    if webhook.secret_env:
        secret = secret_from_env(webhook.secret_env, "alerts.webhook.secret_env")
        url = signed_dingtalk_url(url, secret)
    title, text = webhook_text(raised, day, settings, language)
    outbox.record(day, key, language, "pending", attempts)
    # the URL carries the chat's token: no error below names it
    try:
        response = httpx.post(url, json=webhook_payload(webhook.kind, title, text), timeout=10)
        # DingTalk and WeCom answer 200 with their own error code
        answer = response.json() if "json" in response.headers.get("content-type", "") else {}
        if response.is_error:
            problem = f"the chat answered HTTP {response.status_code} {response.reason_phrase}"
        elif answer.get("errcode", 0) != 0:
            problem = f"the chat refused it: errcode {answer['errcode']} {answer.get('errmsg')}"
        else:
            problem = None
    except httpx.HTTPError as exc:
        problem = f"the chat could not be reached ({type(exc).__name__})"
    if problem:
        error = f"webhook {webhook.kind}: {problem}"
        outbox.record(day, key, language, "failed", attempts + 1, error)
        return {key: f"failed: {error}"}
    outbox.record(day, key, language, "sent", attempts + 1)
    return {key: "sent"}
