"""The morning follow-up mail: each rep's own list of deals to act on today (mart_follow_up),
most at stake first, with the question to ask. It reads the warehouse only, and a rep's mail
carries that rep's deals alone."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import css_inline
import pandas as pd

from loudou.config import Settings
from loudou.digest import Digest, DigestError, Formats, Recipient, as_day, labels, templates
from loudou.warehouse import Warehouse


def newest_list_day(warehouse: Warehouse, today: date) -> date:
    """The newest day a nightly built the follow-up lists for, up to `today`."""
    newest = warehouse.query(
        "SELECT MAX(as_of_date) AS d FROM mart_follow_up WHERE as_of_date <= :t", {"t": today}
    ).d.iat[0]
    if pd.isna(newest):
        raise DigestError(
            "follow-up: no nightly run has built the follow-up lists yet; "
            "run `loudou run nightly` first"
        )
    return pd.Timestamp(newest).date()


def follow_up_lists(
    warehouse: Warehouse, day: date
) -> list[tuple[Recipient, list[dict[str, Any]]]]:
    """Each rep with deals to act on `day`, and those deals in the order to act."""
    rows = warehouse.query(
        "SELECT f.*, u.name AS rep_name, u.email, a.name AS account_name "
        "FROM mart_follow_up f "
        "LEFT JOIN dim_user u ON u.user_id = f.owner_id "
        "LEFT JOIN dim_account a ON a.account_id = f.account_id "
        "WHERE f.as_of_date = :d ORDER BY f.owner_id, f.priority",
        {"d": day},
    )
    lists = []
    for owner, deals in rows.groupby("owner_id", sort=True):
        first = deals.iloc[0]
        email = first.email if pd.notna(first.email) and first.email else None
        name = first.rep_name if pd.notna(first.rep_name) else owner
        recipient = Recipient(key=owner, name=name, email=email, team_id=first.team_id)
        lists.append((recipient, deals.to_dict("records")))
    return lists


def render_follow_up(
    recipient: Recipient,
    deals: list[dict[str, Any]],
    day: date,
    settings: Settings,
    language: str,
) -> Digest:
    """The rep's mail as HTML (CSS inlined) and plain text."""
    t = labels(language)
    fmt = Formats(t["locale"], settings.currency)
    template = settings.digest.crm_url_template
    shown = [
        {
            "name": deal["name"] or deal["opportunity_id"],
            "account": deal["account_name"],
            "stage": deal["stage"],
            "amount": deal["amount"],
            "at_stake": deal["weighted_amount"],
            "close_date": as_day(deal["expected_close_date"]),
            "days_since_activity": deal["days_since_activity"],
            "focus": t["focus"][deal["focus"]],
            "reasons": t["reason_separator"].join(
                t["reason"][reason] for reason in str(deal["reasons"]).split(",")
            ),
            "question": t["question"][deal["focus"]],
            "url": template.format(opportunity_id=deal["opportunity_id"]) if template else None,
        }
        for deal in deals
    ]
    # the mail is for the morning after the day its data ends with
    morning = day + timedelta(days=1)
    subject = t["follow_up_subject"].format(
        day=fmt.date(morning), deals=fmt.count(len(shown), t["deal_count"])
    )
    values = {
        "t": t,
        "fmt": fmt,
        "subject": subject,
        "recipient_name": recipient.name,
        "deals": shown,
        "as_of": day,
        "timezone": settings.timezone,
        "html_lang": "zh-CN" if language == "zh-CN" else "en",
    }
    env = templates()
    html = css_inline.inline(env.get_template("follow_up.html.j2").render(values))
    text = env.get_template("follow_up.txt.j2").render(values)
    return Digest(recipient=recipient, subject=subject, html=html, text=text)
