"""The weekly manager digest: read the warehouse, scope it to one team, render HTML and text.

Digests read the warehouse only, never the CRM. A manager's digest is built from rows of their
team alone (team scope in the marts, their reps' deals in the lists), so it never carries
another team's deal, account or rep names. Sections whose mart is missing are left out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import EmailMessage
from email.utils import formatdate
from functools import lru_cache
from typing import Any

import css_inline
import jinja2
import numpy as np
import pandas as pd
import yaml
from babel import Locale
from babel.dates import format_date
from babel.numbers import format_compact_currency, format_decimal, format_percent

from loudou.config import Settings
from loudou.errors import LoudouError
from loudou.paths import TEMPLATE_DIR
from loudou.warehouse import Warehouse


class DigestError(LoudouError):
    pass


@dataclass(frozen=True)
class Recipient:
    key: str  # the manager's user id, or "director"
    name: str
    email: str | None
    team_id: str | None  # None: every team (the director)
    team_name: str | None = None

    @property
    def address(self) -> str:
        """The digest_outbox's recipient: the e-mail address, or who lacks one."""
        return self.email or f"(no e-mail: {self.key})"


@dataclass
class Digest:
    recipient: Recipient
    subject: str
    html: str
    text: str
    images: dict[str, bytes] = field(default_factory=dict)

    def html_with_image_files(self, prefix: str) -> str:
        """The HTML for a page on disk, its charts saved next to it as `<prefix><cid>.png`."""
        html = self.html
        for cid in self.images:
            html = html.replace(f'src="cid:{cid}"', f'src="{prefix}{cid}.png"')
        return html

    def message(self, sender: str, week_start: date) -> EmailMessage:
        """multipart/alternative: text, then HTML with its charts related by Content-ID."""
        message = EmailMessage()
        message["Subject"] = self.subject
        message["From"] = sender
        message["To"] = self.recipient.email or ""
        message["Date"] = formatdate(localtime=False)
        # the same digest always has the same id, so a receiver can drop a duplicate
        digest_id = hashlib.sha1(f"{week_start}|{self.recipient.address}".encode()).hexdigest()
        message["Message-ID"] = f"<digest-{week_start}-{digest_id[:16]}@loudou>"
        message.set_content(self.text)
        message.add_alternative(self.html, subtype="html")
        html_part = message.get_payload()[1]
        for cid, png in self.images.items():
            html_part.add_related(png, "image", "png", cid=f"<{cid}>", filename=f"{cid}.png")
        return message


class Formats:
    """Numbers, money, percentages and dates as the reader's locale writes them."""

    def __init__(self, locale: str, currency: str):
        # parsed once: babel parses a locale name on every call otherwise (≈ 0.05 s a digest)
        self.locale, self.currency = Locale.parse(locale), currency

    def money(self, value: float | None) -> str:
        if value is None or pd.isna(value):
            return "–"
        return format_compact_currency(value, self.currency, locale=self.locale, fraction_digits=1)

    def signed_money(self, value: float) -> str:
        return ("+" if value >= 0 else "−") + self.money(abs(value))

    def percent(self, value: float | None) -> str:
        if value is None or pd.isna(value):
            return "–"
        return format_percent(value, locale=self.locale)

    def signed_points(self, value: float) -> str:
        return (
            ("+" if value >= 0 else "−")
            + format_decimal(abs(value) * 100, "0.0", locale=self.locale)
            + " pp"
        )

    def number(self, value: float | None, digits: int = 0) -> str:
        if value is None or pd.isna(value):
            return "–"
        return format_decimal(
            value, "#,##0." + "0" * digits if digits else "#,##0", locale=self.locale
        )

    def date(self, value: date) -> str:
        return format_date(value, "medium", locale=self.locale)


@lru_cache(maxsize=4)
def labels(language: str) -> dict[str, Any]:
    return yaml.safe_load((TEMPLATE_DIR / "i18n" / f"{language}.yaml").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _has_table(warehouse: Warehouse, table: str) -> bool:
    try:
        warehouse.query(f"SELECT 1 FROM {table} LIMIT 0")
    except Exception:
        return False
    return True


def localized_detail(detail: str, t: dict[str, Any]) -> str:
    """The hygiene mart's English detail in the reader's language."""
    patterns = [
        (r"never recorded at (?P<stages>.+)", "skipped"),
        (r"first seen at (?P<stage>.+)", "first_seen"),
        (r"won with no funnel history", "no_history"),
        (r"won (?P<days>\d+) days after creation", "quick_win"),
    ]
    parts = []
    for part in detail.split("; "):
        for pattern, key in patterns:
            match = re.fullmatch(pattern, part)
            if match:
                parts.append(t["detail_text"][key].format(**match.groupdict()))
                break
        else:
            parts.append(part)
    return "; ".join(parts)


def recipients(warehouse: Warehouse, settings: Settings) -> list[Recipient]:
    """Each team's manager, and the director they report to (or digest.director_email)."""
    teams = warehouse.query(
        "SELECT t.team_id, t.name AS team_name, t.manager_id, u.name, u.email, "
        "u.manager_id AS boss FROM dim_team t LEFT JOIN dim_user u ON u.user_id = t.manager_id "
        "ORDER BY t.team_id"
    )
    out = [
        Recipient(
            key=r.manager_id or f"team {r.team_id}",
            name=r.name or r.team_name,
            email=r.email if pd.notna(r.email) and r.email else None,
            team_id=r.team_id,
            team_name=r.team_name,
        )
        for r in teams.itertuples()
        if pd.notna(r.manager_id)
    ]
    bosses = teams.boss.dropna().unique()
    director_email = settings.digest.director_email
    director_name = None
    if len(bosses):
        boss = warehouse.query(
            "SELECT name, email FROM dim_user WHERE user_id = :u", {"u": bosses[0]}
        )
        if len(boss):
            director_name = boss.name.iat[0]
            director_email = director_email or boss.email.iat[0]
    if director_email or director_name:
        out.append(
            Recipient(
                key="director",
                name=director_name or director_email,
                email=director_email or None,
                team_id=None,
            )
        )
    return out


def latest_as_of(warehouse: Warehouse, week_end: date) -> date:
    found = warehouse.query(
        "SELECT MAX(as_of_date) AS d FROM mart_funnel WHERE as_of_date <= :e", {"e": week_end}
    )
    if found.empty or pd.isna(found.d.iat[0]):
        raise DigestError(
            f"digest: no nightly run has built the marts up to {week_end}; "
            "run `loudou run nightly` (or a backfill) first"
        )
    return pd.Timestamp(found.d.iat[0]).date()


class DigestBuilder:
    """Everything one recipient's digest shows, read from the warehouse and scoped."""

    def __init__(self, warehouse: Warehouse, settings: Settings, week_start: date):
        self.warehouse, self.settings = warehouse, settings
        self.week_start = week_start
        self.as_of = latest_as_of(warehouse, week_start + timedelta(days=6))
        self.users = warehouse.query("SELECT user_id, name, team_id FROM dim_user").set_index(
            "user_id"
        )
        self.has = {t: _has_table(warehouse, t) for t in ("mart_forecast", "dq_quarantine")}
        self._reads: dict[tuple, pd.DataFrame] = {}
        # company-wide reads split once by scope or team: hundreds of recipients then look
        # their part up instead of each scanning the whole week's marts
        self._splits: dict[tuple, tuple[pd.DataFrame, dict[Any, pd.DataFrame]]] = {}
        self._names = self.users.name.to_dict()
        self._team_reps = {
            team: set(members) for team, members in self.users.groupby("team_id").groups.items()
        }

    def q(self, sql: str, **params: Any) -> pd.DataFrame:
        """A read of this week's warehouse; the company-wide ones serve every recipient."""
        key = (sql, tuple(sorted(params.items())))
        if key not in self._reads:
            self._reads[key] = self.warehouse.query(sql, {"as_of": self.as_of, **params})
        return self._reads[key]

    def scoped(self, sql: str, kind: str, scope_id: str, **params: Any) -> pd.DataFrame:
        """One scope's rows of a read of every scope (rows keep the query's order)."""
        key = ("scope", sql, tuple(sorted(params.items())))
        if key not in self._splits:
            rows = self.q(sql, **params)
            groups = rows.groupby(["scope_kind", "scope_id"], sort=False)
            self._splits[key] = (rows.iloc[:0], {k: g for k, g in groups})
        empty, by_scope = self._splits[key]
        return by_scope.get((kind, scope_id), empty)

    def team_rows(self, sql: str, owner_column: str, r: Recipient) -> pd.DataFrame:
        """The rows of a company-wide read owned by the recipient's reps (by any of them, for
        a comma-separated list of owners), in the query's order; every known rep's for the
        director."""
        key = ("team", sql, owner_column)
        if key not in self._splits:
            rows = self.q(sql).reset_index(drop=True)
            owners = rows[owner_column].fillna("").astype("str").str.split(",").explode()
            owners = owners[owners.isin(self.users.index)]
            positions = pd.Series(owners.index, index=owners.index)
            by_team = positions.groupby(owners.map(self.users.team_id).to_numpy())
            self._splits[key] = (
                rows.iloc[np.unique(positions)],
                {team: rows.iloc[np.unique(p)] for team, p in by_team},
            )
        everyone, by_team = self._splits[key]
        return everyone if r.team_id is None else by_team.get(r.team_id, everyone.iloc[:0])

    # scope helpers: (scope_kind, scope_id) in the marts, and the reps whose rows we may show
    def scope(self, r: Recipient) -> tuple[str, str]:
        return ("company", "all") if r.team_id is None else ("team", r.team_id)

    def reps(self, r: Recipient) -> set[str]:
        if r.team_id is None:
            return set(self.users.index)
        return self._team_reps.get(r.team_id, set())

    def name_of(self, user_id: str | None, allowed: set[str], language: str) -> str:
        if user_id is None or pd.isna(user_id):
            return "–"
        if user_id not in allowed:
            return labels(language)["another_team"]
        return str(self._names.get(user_id, user_id))

    def deal_url(self, opportunity_id: str) -> str | None:
        template = self.settings.digest.crm_url_template
        return template.format(opportunity_id=opportunity_id) if template else None

    def context(self, r: Recipient, language: str) -> dict[str, Any]:
        t = labels(language)
        kind, scope_id = self.scope(r)
        allowed = self.reps(r)
        funnel = self.scoped(
            "SELECT * FROM mart_funnel WHERE as_of_date = :as_of ORDER BY stage_order",
            kind,
            scope_id,
        )
        return {
            "t": t,
            "recipient_name": r.name,
            "as_of": self.as_of,
            "timezone": self.settings.timezone,
            "banners": self.banners(language),
            "headline": self.headline(kind, scope_id, funnel),
            "stalled": self.stalled(r, allowed, language),
            "hidden": self.hidden(r, allowed, language),
            "handover": self.handover(r, allowed, language),
            "funnel_rows": funnel.to_dict("records"),
            "conversion": self.conversion(kind, scope_id),
            "movement_rows": self.movement(kind, scope_id, t),
            "territory": self.territory(r, allowed, language),
        }

    def headline(self, kind: str, scope_id: str, funnel: pd.DataFrame) -> dict[str, Any]:
        week_ago = self.scoped(
            "SELECT scope_kind, scope_id, SUM(open_amount) AS amount, "
            "SUM(weighted_amount) AS weighted FROM mart_funnel WHERE as_of_date = :d "
            "GROUP BY scope_kind, scope_id",
            kind,
            scope_id,
            d=self.as_of - timedelta(days=7),
        )
        before = week_ago.iloc[0] if len(week_ago) and pd.notna(week_ago.amount.iat[0]) else None
        movement = self.movement_rows(kind, scope_id)
        won = movement[movement.bucket.eq("won")]
        rates = self.scoped(
            "SELECT scope_kind, scope_id, period_start, value FROM mart_sales_metrics "
            "WHERE as_of_date = :as_of AND period_kind = 'week' AND metric = 'win_rate' "
            "AND period_start IN (:w, :p)",
            kind,
            scope_id,
            w=self.week_start,
            p=self.week_start - timedelta(days=7),
        )
        rate = dict(zip(pd.to_datetime(rates.period_start).dt.date, rates.value))
        this_rate, last_rate = (
            rate.get(self.week_start),
            rate.get(self.week_start - timedelta(days=7)),
        )
        pipeline, weighted = funnel.open_amount.sum(), funnel.weighted_amount.sum()
        forecast = self.forecast(kind, scope_id)
        return {
            "pipeline": pipeline,
            "weighted": weighted,
            "pipeline_change": None if before is None else pipeline - before.amount,
            "weighted_change": None if before is None else weighted - before.weighted,
            "won_count": int(won.deal_count.sum()) if len(won) else 0,
            "won_amount": float(won.amount.sum()) if len(won) else 0.0,
            "win_rate": this_rate,
            "win_rate_change": None
            if this_rate is None or last_rate is None or pd.isna(this_rate) or pd.isna(last_rate)
            else this_rate - last_rate,
            **forecast,
        }

    def forecast(self, kind: str, scope_id: str) -> dict[str, Any]:
        if not self.has["mart_forecast"]:
            return {"forecast_p50": None, "target": None}
        rows = self.scoped(
            "SELECT scope_kind, scope_id, p50, target FROM mart_forecast WHERE as_of_date = "
            ":as_of AND period_kind = 'month' AND method = 'monte_carlo' ORDER BY period_start",
            kind,
            scope_id,
        )
        if rows.empty:
            return {"forecast_p50": None, "target": None}
        return {"forecast_p50": rows.p50.iat[0], "target": rows.target.iat[0]}

    def stalled(self, r: Recipient, allowed: set[str], language: str) -> list[dict[str, Any]]:
        t = labels(language)
        rows = self.team_rows(
            "SELECT s.*, o.name AS deal_name, a.name AS account_name FROM mart_stalled_deals s "
            "LEFT JOIN fct_opportunity o USING (opportunity_id) "
            "LEFT JOIN dim_account a ON a.account_id = o.account_id "
            "WHERE s.as_of_date = :as_of ORDER BY s.amount * s.probability DESC NULLS LAST",
            "owner_id",
            r,
        ).head(self.settings.digest.top_n)
        return [
            {
                "name": row.deal_name,
                "account": row.account_name,
                "stage": row.stage,
                "owner": self.name_of(row.owner_id, allowed, language),
                "days_in_stage": row.days_in_stage,
                "amount": row.amount,
                "reasons": t["reason_separator"].join(
                    t["reason"][x] for x in str(row.reasons).split(",")
                ),
                "hint": t["hint_text"][row.funnel_position],
                "url": self.deal_url(row.opportunity_id),
            }
            for row in rows.itertuples()
        ]

    def hidden(self, r: Recipient, allowed: set[str], language: str) -> list[dict[str, Any]]:
        """Hidden deals that are still open or closed this week, and live collisions, both
        limited to the recipient's reps; the other side of a collision stays anonymous."""
        t = labels(language)
        rows = self.team_rows(
            "SELECT h.*, o.name AS deal_name, o.status, o.closed_at, a.name AS account_name, "
            "a.owner_id AS account_owner FROM mart_hygiene h "
            "LEFT JOIN fct_opportunity o ON o.opportunity_id = h.subject_id "
            "LEFT JOIN dim_account a ON a.account_id = h.subject_id "
            "WHERE h.as_of_date = :as_of AND h.kind IN ('collision', 'appeared_late', "
            "'skipped_stage') ORDER BY h.kind, h.subject_id",
            "owner_ids",
            r,
        )
        rows = rows.assign(owners=rows.owner_ids.fillna("").str.split(","))
        recent = rows.status.eq("open") | (
            pd.to_datetime(rows.closed_at) >= pd.Timestamp(self.week_start)
        )
        limit = 2 * self.settings.digest.top_n
        deals = rows[rows.kind.ne("collision") & recent].head(limit)
        collisions = rows[rows.kind.eq("collision") & rows.account_owner.isin(allowed)]
        out = [
            {
                "kind": t["hygiene_kind"]["collision"],
                "subject": " / ".join(group.account_name.str.strip()),
                "detail": "",
                "owners": ", ".join(
                    self.name_of(o, allowed, language) for o in group.owners.iat[0]
                ),
                "url": None,
            }
            for _, group in collisions.groupby("group_id", sort=True)
        ]
        out += [
            {
                "kind": t["hygiene_kind"][row.kind],
                "subject": row.deal_name,
                "detail": localized_detail(str(row.detail), t),
                "owners": ", ".join(self.name_of(o, allowed, language) for o in row.owners),
                "url": self.deal_url(row.subject_id),
            }
            for row in deals.itertuples()
        ]
        return out[:limit]

    def handover(self, r: Recipient, allowed: set[str], language: str) -> list[dict[str, Any]]:
        t = labels(language)
        rows = self.team_rows(
            "SELECT h.*, o.name AS deal_name FROM mart_handover h LEFT JOIN "
            "fct_opportunity o USING (opportunity_id) WHERE h.as_of_date = :as_of "
            "ORDER BY h.departing_owner_id, h.priority",
            "departing_owner_id",
            r,
        )
        return [
            {
                "name": row.deal_name,
                "stage": row.stage,
                "probability": row.probability,
                "from_owner": self.name_of(row.departing_owner_id, allowed, language),
                "new_owner": self.name_of(row.suggested_owner_id, allowed, language),
                "action": t["action_text"][row.action],
            }
            for row in rows.itertuples()
        ]

    def conversion(self, kind: str, scope_id: str) -> list[dict[str, Any]]:
        rows = self.scoped(
            "SELECT * FROM mart_stage_conversion WHERE as_of_date = :as_of AND "
            "period_kind = 'month' AND dimension = 'all' AND funnel = 'strict' "
            "ORDER BY period_start DESC, stage_order",
            kind,
            scope_id,
        )
        if rows.empty:
            return []
        latest = rows[rows.period_start == rows.period_start.max()]
        return latest.to_dict("records")

    def movement_rows(self, kind: str, scope_id: str) -> pd.DataFrame:
        return self.scoped(
            "SELECT scope_kind, scope_id, bucket, deal_count, amount FROM "
            "mart_pipeline_movement WHERE as_of_date = :as_of AND week_start = :w",
            kind,
            scope_id,
            w=self.week_start,
        )

    def movement(self, kind: str, scope_id: str, t: dict[str, Any]) -> list[dict[str, Any]]:
        rows = self.movement_rows(kind, scope_id)
        order = list(t["bucket"])
        rows = rows[rows.bucket.isin(order)]
        rows = rows.assign(position=rows.bucket.map(order.index)).sort_values("position")
        rows = rows[(rows.deal_count > 0) | rows.bucket.isin(["start", "end"])]
        return [
            {
                "bucket": r.bucket,
                "label": t["bucket"][r.bucket],
                "deal_count": r.deal_count,
                "amount": r.amount,
            }
            for r in rows.itertuples()
        ]

    def territory(self, r: Recipient, allowed: set[str], language: str) -> list[dict[str, Any]]:
        balance = self.q(
            "SELECT b.*, t.name FROM mart_territory_balance b LEFT JOIN "
            "dim_territory t USING (territory_id) WHERE b.as_of_date = :as_of"
        )
        mine = self.team_rows(
            "SELECT * FROM mart_territory_load WHERE as_of_date = :as_of", "owner_id", r
        )
        if r.team_id is not None:
            balance = balance[balance.territory_id.isin(mine.territory_id)]
        # the reps over and under their fair share, by territory
        flagged = mine[mine.status.isin(["over", "under"])]
        names = flagged.groupby(["territory_id", "status"]).owner_id.agg(
            lambda owners: ", ".join(self.name_of(o, allowed, language) for o in owners)
        )
        return [
            {
                "name": row.name,
                "cv": row.cv,
                "cv_after": row.cv_after_rebalancing,
                "over": names.get((row.territory_id, "over"), ""),
                "under": names.get((row.territory_id, "under"), ""),
            }
            for row in balance.itertuples()
        ]

    def banners(self, language: str) -> list[str]:
        """Warn when the data behind the digest is incomplete or stale."""
        t = labels(language)
        runs = self.q(
            "SELECT status, as_of_date, error, started_at FROM etl_run WHERE flow = 'nightly' "
            "ORDER BY started_at DESC LIMIT 1"
        )
        out = []
        if len(runs) and runs.status.iat[0] == "failed":
            out.append(t["dq_failed_run"].format(error=runs.error.iat[0]))
        week_end = self.week_start + timedelta(days=6)
        if self.as_of < week_end:
            formats = Formats(t["locale"], self.settings.currency)
            out.append(t["dq_stale"].format(as_of=formats.date(self.as_of)))
        if self.has["dq_quarantine"]:
            waiting = self.q("SELECT COUNT(*) AS n FROM dq_quarantine WHERE released_at IS NULL")
            if len(waiting) and waiting.n.iat[0]:
                out.append(t["dq_quarantined"].format(count=int(waiting.n.iat[0])))
        return out


def render(builder: DigestBuilder, recipient: Recipient, language: str) -> Digest:
    """The digest's HTML (CSS inlined, charts by Content-ID) and plain text."""
    from loudou.charts import funnel_chart, movement_chart

    with builder.warehouse.session():
        context = builder.context(recipient, language)
    t = context["t"]
    fmt = Formats(t["locale"], builder.settings.currency)
    scope = recipient.team_name or t["director_scope"]
    subject = t["subject"].format(week=fmt.date(builder.week_start), scope=scope)
    images = {}
    if context["funnel_rows"]:
        images["funnel"] = funnel_chart(context["funnel_rows"], t, fmt)
    if context["movement_rows"]:
        images["movement"] = movement_chart(context["movement_rows"], t, fmt)
    charts = {cid: f"cid:{cid}" for cid in images}
    env = _templates()
    values = {
        **context,
        "fmt": fmt,
        "subject": subject,
        "charts": charts,
        "html_lang": "zh-CN" if language == "zh-CN" else "en",
    }
    html = css_inline.inline(env.get_template("digest.html.j2").render(values))
    text = env.get_template("digest.txt.j2").render(values)
    return Digest(recipient=recipient, subject=subject, html=html, text=text, images=images)
