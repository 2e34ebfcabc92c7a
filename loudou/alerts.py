"""Conversion alerts: the flags mart_conversion_alert raised on a day, each to the manager of
its scope (a team's manager, the director for the company) by mail, and to a chat group by
webhook, with the evidence: the week's rate, the week before, the benchmark, the deals lost
at the stage. It reads the warehouse only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock
from typing import Any

import css_inline
import pandas as pd

from loudou.config import Settings
from loudou.digest import Digest, Formats, Recipient, labels, recipients, templates
from loudou.warehouse import Warehouse
from transforms.scopes import local_time, period_start

# deals shown behind each alert, most at stake first
DEALS_SHOWN = 5


@dataclass(frozen=True)
class Alert:
    scope_kind: str
    scope_id: str
    scope_name: str
    pipeline: str
    stage: str
    kind: str  # anomaly or bottleneck
    week_start: date
    conversion_rate: float
    previous_rate: float | None
    benchmark_rate: float | None
    advanced: int
    decided: int
    p_value: float | None
    deals: list[dict[str, Any]]


def newest_alert_day(warehouse: Warehouse, today: date) -> date | None:
    """The newest day a run built the alerts for, up to `today` (None: none yet)."""
    newest = warehouse.query(
        "SELECT MAX(as_of_date) AS d FROM etl_run WHERE flow = 'nightly' "
        "AND status = 'success' AND as_of_date <= :t",
        {"t": today},
    ).d.iat[0]
    return None if pd.isna(newest) else pd.Timestamp(newest).date()


def in_quiet_hours(now: datetime, quiet_hours: str | None) -> bool:
    """Whether the local `now` falls in the span (22:00-08:00 runs over midnight)."""
    if quiet_hours is None:
        return False
    start, end = (clock.fromisoformat(part) for part in quiet_hours.split("-"))
    at = now.time()
    return start <= at < end if start <= end else at >= start or at < end


def raised_alerts(
    warehouse: Warehouse, day: date, settings: Settings
) -> list[tuple[Recipient, list[Alert]]]:
    """Each manager with alerts raised on `day`, and the alerts of their scope."""
    flags = warehouse.query(
        "SELECT a.*, t.name AS team_name FROM mart_conversion_alert a "
        "LEFT JOIN dim_team t ON a.scope_kind = 'team' AND t.team_id = a.scope_id "
        "WHERE a.as_of_date = :d AND a.raised ORDER BY a.scope_kind, a.scope_id, a.pipeline, "
        "a.stage, a.kind",
        {"d": day},
    )
    if flags.empty:
        return []
    lost = _lost_at_stage(warehouse, flags.period_start.min(), settings.timezone)
    alerts: dict[str | None, list[Alert]] = {}
    for flag in flags.itertuples():
        team = flag.scope_id if flag.scope_kind == "team" else None
        week = pd.Timestamp(flag.period_start)
        deals = lost[
            lost.pipeline.eq(flag.pipeline)
            & lost.stage.eq(flag.stage)
            & lost.week_start.eq(week)
            & (lost.team_id.eq(team) if team else True)
        ]
        alerts.setdefault(team, []).append(
            Alert(
                scope_kind=flag.scope_kind,
                scope_id=flag.scope_id,
                scope_name=flag.team_name if pd.notna(flag.team_name) else flag.scope_id,
                pipeline=flag.pipeline,
                stage=flag.stage,
                kind=flag.kind,
                week_start=week.date(),
                conversion_rate=flag.conversion_rate,
                previous_rate=_number(flag.previous_rate),
                benchmark_rate=_number(flag.benchmark_rate),
                advanced=int(flag.advanced),
                decided=int(flag.advanced + flag.lost),
                p_value=_number(flag.p_value),
                deals=deals.head(DEALS_SHOWN).to_dict("records"),
            )
        )
    return [(r, alerts[r.team_id]) for r in recipients(warehouse, settings) if r.team_id in alerts]


def _number(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)


def _lost_at_stage(warehouse: Warehouse, first_week: Any, timezone: str) -> pd.DataFrame:
    """The stays ended by a loss that began in a week from `first_week` on (local weeks),
    most at stake first, with the deal's name, owner and team."""
    start = pd.Timestamp(first_week).tz_localize(timezone).tz_convert("UTC").tz_localize(None)
    lost = warehouse.query(
        "SELECT i.pipeline, i.stage, i.entered_at, o.opportunity_id, o.name, o.amount, "
        "u.name AS owner_name, u.team_id FROM fct_stage_interval i "
        "JOIN fct_opportunity o ON o.opportunity_id = i.opportunity_id "
        "LEFT JOIN dim_user u ON u.user_id = o.owner_id "
        "WHERE i.exit_kind = 'lost' AND i.entered_at >= :start "
        "ORDER BY o.amount DESC NULLS LAST, o.opportunity_id",
        {"start": start},
    )
    lost["week_start"] = period_start(local_time(lost.entered_at, timezone), "week")
    return lost


def render_alerts(
    recipient: Recipient, alerts: list[Alert], day: date, settings: Settings, language: str
) -> Digest:
    """The manager's alert mail as HTML (CSS inlined) and plain text."""
    t = labels(language)
    fmt = Formats(t["locale"], settings.currency)
    values = _values(alerts, day, settings, t, fmt) | {
        "recipient_name": recipient.name,
        "html_lang": "zh-CN" if language == "zh-CN" else "en",
    }
    env = templates()
    html = css_inline.inline(env.get_template("alert.html.j2").render(values))
    text = env.get_template("alert.txt.j2").render(values)
    return Digest(recipient=recipient, subject=values["subject"], html=html, text=text)


def _values(
    alerts: list[Alert], day: date, settings: Settings, t: dict[str, Any], fmt: Formats
) -> dict[str, Any]:
    template = settings.digest.crm_url_template
    shown = [
        {
            "alert": alert,
            "what": t["alert_kind"][alert.kind],
            "scope": t["alert_company"] if alert.scope_kind == "company" else alert.scope_name,
            "week": fmt.date(alert.week_start),
            "week_before": fmt.date(alert.week_start - timedelta(days=7)),
            "deals": [
                deal
                | {
                    "url": template.format(opportunity_id=deal["opportunity_id"])
                    if template
                    else None
                }
                for deal in alert.deals
            ],
        }
        for alert in alerts
    ]
    subject = t["alert_subject"].format(
        count=len(alerts), week=fmt.date(alerts[0].week_start), as_of=fmt.date(day)
    )
    return {
        "t": t,
        "fmt": fmt,
        "subject": subject,
        "alerts": shown,
        "as_of": day,
        "timezone": settings.timezone,
    }


def webhook_text(
    alerts: list[tuple[Recipient, list[Alert]]], day: date, settings: Settings, language: str
) -> tuple[str, str]:
    """The chat message (title, markdown text) of every alert raised on `day`."""
    t = labels(language)
    fmt = Formats(t["locale"], settings.currency)
    every = [alert for _, scoped in alerts for alert in scoped]
    values = _values(every, day, settings, t, fmt)
    return values["subject"], templates().get_template("alert.md.j2").render(values)


def webhook_payload(kind: str, title: str, text: str) -> dict[str, Any]:
    """The JSON each chat's incoming webhook takes for a markdown message."""
    if kind == "slack":
        return {"text": text}
    if kind == "wecom":
        return {"msgtype": "markdown", "markdown": {"content": text}}
    return {"msgtype": "markdown", "markdown": {"title": title, "text": text}}


def signed_dingtalk_url(url: str, secret: str, now_ms: int | None = None) -> str:
    """DingTalk's signed webhook URL: timestamp and HMAC-SHA256 of "timestamp\\nsecret"."""
    timestamp = str(now_ms if now_ms is not None else round(time.time() * 1000))
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    sign = urllib.parse.quote_plus(base64.b64encode(digest))
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}timestamp={timestamp}&sign={sign}"
