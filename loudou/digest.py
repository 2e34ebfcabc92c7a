"""The weekly manager digest: read the warehouse, scope it to one team, render HTML and text.

Digests read the warehouse only, never the CRM. A manager's digest is built from rows of their
team alone (team scope in the marts, their reps' deals in the lists), so it never carries
another team's deal, account or rep names. Sections whose mart is missing are left out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

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
from loudou.source import unrecorded_fields
from loudou.warehouse import Warehouse

# one row of a warehouse read, as a digest section walks it
Record = dict[str, Any]


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

    def message(
        self, sender: str, week_start: date, timezone: str = "UTC", kind: str = "digest"
    ) -> EmailMessage:
        """multipart/alternative: text, then HTML with its charts related by Content-ID,
        shown inline (not listed as attachments); dated in the reporting time zone. `kind`
        and `week_start` (the day, for a daily mail) make its Message-ID."""
        message = EmailMessage()
        message["Subject"] = self.subject
        message["From"] = formataddr((SENDER_NAME, sender))
        message["To"] = formataddr((self.recipient.name, self.recipient.email or ""))
        message["Date"] = format_datetime(datetime.now(ZoneInfo(timezone)))
        # the same digest always has the same id, so a receiver can drop a duplicate
        digest_id = hashlib.sha1(f"{week_start}|{self.recipient.address}".encode()).hexdigest()
        domain = sender.rpartition("@")[2] or "localhost"
        message["Message-ID"] = f"<{kind}-{week_start}-{digest_id[:16]}@{domain}>"
        message.set_content(self.text)
        message.add_alternative(self.html, subtype="html")
        html_part = message.get_payload()[1]
        for cid, png in self.images.items():
            html_part.add_related(
                png, "image", "png", cid=f"<{cid}>", filename=f"{cid}.png", disposition="inline"
            )
        return message


SENDER_NAME = "loudou 漏斗"
# closed months the headline's forecast accuracy averages over
ACCURACY_MONTHS = 6


def capped(name: str, rows: list[dict[str, Any]], top_n: int) -> dict[str, Any]:
    """A list the digest shows at most `top_n` of, and how many more there are."""
    return {name: rows[:top_n], f"{name}_more": max(0, len(rows) - top_n)}


def as_day(value: Any) -> date | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).date()


class Formats:
    """Numbers, money, percentages and dates as the reader's locale writes them."""

    def __init__(self, locale: str, currency: str):
        # parsed once: babel parses a locale name on every call otherwise (≈ 0.05 s a digest)
        self.locale, self.currency = Locale.parse(locale), currency
        # a digest writes each amount in its HTML, its text and a chart, and babel's compact
        # format is its slowest
        self.money = lru_cache(maxsize=4096)(self._money)

    def _money(self, value: float | None) -> str:
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

    def count(self, value: int, forms: dict[str, str]) -> str:
        """`value` things, in the plural form the locale gives that number (CLDR rules)."""
        form = self.locale.plural_form(abs(int(value)))
        return forms.get(form, forms["other"]).format(count=self.number(value))

    def date(self, value: date) -> str:
        return format_date(value, "medium", locale=self.locale)


@lru_cache(maxsize=4)
def labels(language: str) -> dict[str, Any]:
    return yaml.safe_load((TEMPLATE_DIR / "i18n" / f"{language}.yaml").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def templates() -> jinja2.Environment:
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
    """Everything one recipient's digest shows, read from the warehouse and scoped.

    Each company-wide read is made once, turned into plain records and split by scope or by
    team; a recipient's part is a few dozen records, which Python walks faster than pandas
    filters a small frame (that per-call cost was most of a digest's context)."""

    def __init__(
        self,
        warehouse: Warehouse,
        settings: Settings,
        week_start: date,
        expected_day: date | None = None,
    ):
        self.warehouse, self.settings = warehouse, settings
        self.week_start = week_start
        # the as-of day of the newest nightly the schedule should have run by now
        self.expected_day = expected_day
        self.as_of = latest_as_of(warehouse, week_start + timedelta(days=6))
        self.users = warehouse.query("SELECT user_id, name, team_id FROM dim_user").set_index(
            "user_id"
        )
        self.has = {t: _has_table(warehouse, t) for t in ("mart_forecast", "dq_quarantine")}
        self._reads: dict[tuple, pd.DataFrame] = {}
        # per read: its records and, per scope or team, the positions of that part's records
        self._splits: dict[tuple, tuple[list[Record], dict[Any, list[int]]]] = {}
        self._names = self.users.name.to_dict()
        self._team_reps = {
            team: set(members) for team, members in self.users.groupby("team_id").groups.items()
        }

    def _read(self, sql: str, **params: Any) -> pd.DataFrame:
        return self.warehouse.query(sql, {"as_of": self.as_of, **params})

    def q(self, sql: str, **params: Any) -> pd.DataFrame:
        """A read of this week's warehouse, made once for every recipient."""
        key = (sql, tuple(sorted(params.items())))
        if key not in self._reads:
            self._reads[key] = self._read(sql, **params)
        return self._reads[key]

    def _keep(self, key: tuple, rows: pd.DataFrame, parts: dict[Any, np.ndarray]) -> None:
        """A company-wide read kept as records, with the positions of each part's records."""
        self._splits[key] = (
            rows.to_dict("records"),
            {part: positions.tolist() for part, positions in parts.items()},
        )

    def _part(self, key: tuple, part: Any) -> list[Record]:
        records, positions = self._splits[key]
        return [records[i] for i in positions.get(part, ())]

    def records(self, sql: str, **params: Any) -> list[Record]:
        """Every record of a company-wide read."""
        key = ("all", sql, tuple(sorted(params.items())))
        if key not in self._splits:
            self._keep(key, self._read(sql, **params), {})
        return self._splits[key][0]

    def scoped(self, sql: str, kind: str, scope_id: str, **params: Any) -> list[Record]:
        """One scope's records of a read of every scope, in the query's order."""
        key = ("scope", sql, tuple(sorted(params.items())))
        if key not in self._splits:
            rows = self._read(sql, **params)
            self._keep(key, rows, rows.groupby(["scope_kind", "scope_id"]).indices)
        return self._part(key, (kind, scope_id))

    def team_rows(self, sql: str, owner_column: str, r: Recipient) -> list[Record]:
        """The records of a company-wide read owned by the recipient's reps (by any of them,
        for a comma-separated list of owners), in the query's order; every known rep's for
        the director."""
        key = ("team", sql, owner_column)
        if key not in self._splits:
            rows = self._read(sql).reset_index(drop=True)
            owners = rows[owner_column].fillna("").astype("str").str.split(",").explode()
            owners = owners[owners.isin(self.users.index)]
            positions = pd.Series(owners.index, index=owners.index)
            by_team = positions.groupby(owners.map(self.users.team_id).to_numpy())
            # the director's part (None) is every row with a known rep
            parts = {team: np.unique(p) for team, p in by_team} | {None: np.unique(positions)}
            self._keep(key, rows, parts)
        return self._part(key, r.team_id)

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

    def names_of(self, owners: Any, allowed: set[str], language: str) -> str:
        """A comma-separated list of owner ids as names."""
        ids = "" if pd.isna(owners) else str(owners)
        return ", ".join(self.name_of(o, allowed, language) for o in ids.split(","))

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
            **capped("stalled", self.stalled(r, allowed, language), self.settings.digest.top_n),
            **capped("hidden", self.hidden(r, allowed, language), self.settings.digest.top_n),
            **capped("handover", self.handover(r, allowed, language), self.settings.digest.top_n),
            **capped("pool", self.public_pool(r, allowed, language), self.settings.digest.top_n),
            "pool_days": self.settings.thresholds.public_pool_days,
            "funnel_rows": funnel,
            "conversion": self.conversion(kind, scope_id),
            "movement_rows": self.movement(kind, scope_id, t),
            "territory": self.territory(r, allowed, language),
            # stated, so that no pushed close date reads as a clean record
            "close_date_pushes_unknown": "expected_close_date"
            in unrecorded_fields(self.settings.source.kind),
        }

    def headline(self, kind: str, scope_id: str, funnel: list[Record]) -> dict[str, Any]:
        week_ago = self.scoped(
            "SELECT scope_kind, scope_id, SUM(open_amount) AS amount, "
            "SUM(weighted_amount) AS weighted FROM mart_funnel WHERE as_of_date = :d "
            "GROUP BY scope_kind, scope_id",
            kind,
            scope_id,
            d=self.as_of - timedelta(days=7),
        )
        before = week_ago[0] if week_ago and pd.notna(week_ago[0]["amount"]) else None
        won = [m for m in self.movement_rows(kind, scope_id) if m["bucket"] == "won"]
        rates = self.scoped(
            "SELECT scope_kind, scope_id, period_start, value FROM mart_sales_metrics "
            "WHERE as_of_date = :as_of AND period_kind = 'week' AND metric = 'win_rate' "
            "AND period_start IN (:w, :p)",
            kind,
            scope_id,
            w=self.week_start,
            p=self.week_start - timedelta(days=7),
        )
        rate = {pd.Timestamp(x["period_start"]).date(): x["value"] for x in rates}
        this_rate, last_rate = (
            rate.get(self.week_start),
            rate.get(self.week_start - timedelta(days=7)),
        )
        pipeline = sum(row["open_amount"] for row in funnel)
        weighted = sum(row["weighted_amount"] for row in funnel)
        forecast = self.forecast(kind, scope_id)
        return {
            "pipeline": pipeline,
            "weighted": weighted,
            "pipeline_change": None if before is None else pipeline - before["amount"],
            "weighted_change": None if before is None else weighted - before["weighted"],
            "won_count": int(sum(m["deal_count"] for m in won)),
            "won_amount": float(sum(m["amount"] for m in won)),
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
        if not rows:
            return {"forecast_p50": None, "target": None}
        return {
            "forecast_p50": rows[0]["p50"],
            "target": rows[0]["target"],
            **self.forecast_track_record(kind, scope_id),
        }

    def forecast_track_record(self, kind: str, scope_id: str) -> dict[str, Any]:
        """How close the month's Monte Carlo forecast, read on the month's first day, came to
        what was booked, on average over the last ACCURACY_MONTHS closed months: the kept
        forecast where a run made one that day, else the one replayed from history."""
        rows = self.scoped(
            "SELECT scope_kind, scope_id, period_start, origin, accuracy "
            "FROM mart_forecast_accuracy WHERE period_kind = 'month' AND method = 'monte_carlo' "
            "AND forecast_as_of = period_start AND accuracy IS NOT NULL "
            "ORDER BY period_start DESC, origin DESC",  # live before backtest
            kind,
            scope_id,
        )
        months: dict[Any, Record] = {}
        for row in rows:
            months.setdefault(row["period_start"], row)
        recent = list(months.values())[:ACCURACY_MONTHS]
        if not recent:
            return {"forecast_accuracy": None}
        return {
            "forecast_accuracy": sum(row["accuracy"] for row in recent) / len(recent),
            "accuracy_months": len(recent),
            "accuracy_replayed": all(row["origin"] == "backtest" for row in recent),
        }

    def stalled(self, r: Recipient, allowed: set[str], language: str) -> list[dict[str, Any]]:
        t = labels(language)
        rows = self.team_rows(
            "SELECT s.*, o.name AS deal_name, a.name AS account_name FROM mart_stalled_deals s "
            "LEFT JOIN fct_opportunity o USING (opportunity_id) "
            "LEFT JOIN dim_account a ON a.account_id = o.account_id "
            "WHERE s.as_of_date = :as_of "
            # ties by deal id: the same digest every time it is rendered
            "ORDER BY s.amount * s.probability DESC NULLS LAST, s.opportunity_id",
            "owner_id",
            r,
        )
        return [
            {
                "name": row["deal_name"],
                "account": row["account_name"],
                "stage": row["stage"],
                "owner": self.name_of(row["owner_id"], allowed, language),
                "days_in_stage": row["days_in_stage"],
                "amount": row["amount"],
                "close_date": as_day(row["expected_close_date"]),
                "days_since_activity": row["days_since_activity"],
                "reasons": t["reason_separator"].join(
                    t["reason"][x] for x in str(row["reasons"]).split(",")
                ),
                "hint": t["hint_text"][row["funnel_position"]],
                "url": self.deal_url(row["opportunity_id"]),
            }
            for row in rows
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
        week_start = pd.Timestamp(self.week_start)
        deals = [
            row
            for row in rows
            if row["kind"] != "collision"
            and (
                row["status"] == "open"
                or (pd.notna(row["closed_at"]) and pd.Timestamp(row["closed_at"]) >= week_start)
            )
        ]
        # a collision's rows by group, the groups in order; only the recipient's accounts
        collisions: dict[Any, list[Record]] = {}
        for row in rows:
            if row["kind"] == "collision" and row["account_owner"] in allowed:
                collisions.setdefault(row["group_id"], []).append(row)
        out = [
            {
                "kind": t["hygiene_kind"]["collision"],
                "subject": " / ".join(str(x["account_name"]).strip() for x in group),
                "detail": "",
                "owners": self.names_of(group[0]["owner_ids"], allowed, language),
                "url": None,
            }
            for _, group in sorted(collisions.items())
        ]
        out += [
            {
                "kind": t["hygiene_kind"][row["kind"]],
                "subject": row["deal_name"],
                "detail": localized_detail(str(row["detail"]), t),
                "owners": self.names_of(row["owner_ids"], allowed, language),
                "url": self.deal_url(row["subject_id"]),
            }
            for row in deals
        ]
        return out

    def handover(self, r: Recipient, allowed: set[str], language: str) -> list[dict[str, Any]]:
        t = labels(language)
        rows = self.team_rows(
            "SELECT h.*, o.name AS deal_name FROM mart_handover h LEFT JOIN "
            "fct_opportunity o USING (opportunity_id) WHERE h.as_of_date = :as_of "
            "ORDER BY h.priority, h.amount * h.probability DESC NULLS LAST, h.opportunity_id",
            "departing_owner_id",
            r,
        )
        return [
            {
                "name": row["deal_name"],
                "stage": row["stage"],
                "probability": row["probability"],
                "amount": row["amount"],
                "from_owner": self.name_of(row["departing_owner_id"], allowed, language),
                "new_owner": self.name_of(row["suggested_owner_id"], allowed, language),
                "action": t["action_text"][row["action"]],
            }
            for row in rows
        ]

    def public_pool(self, r: Recipient, allowed: set[str], language: str) -> list[dict[str, Any]]:
        """The team's accounts proposed for the public pool, the most at stake first."""
        rows = self.team_rows(
            "SELECT * FROM mart_public_pool WHERE as_of_date = :as_of "
            "ORDER BY open_amount DESC, days_idle DESC, account_id",
            "owner_id",
            r,
        )
        return [
            {
                "name": row["account_name"],
                "owner": self.name_of(row["owner_id"], allowed, language),
                "days_idle": int(row["days_idle"]),
                "open_deal_count": int(row["open_deal_count"]),
                "open_amount": row["open_amount"],
            }
            for row in rows
        ]

    def conversion(self, kind: str, scope_id: str) -> list[Record]:
        """Each stage of the scope's latest month (strict funnel, all deals)."""
        month = (
            "FROM mart_stage_conversion WHERE as_of_date = :as_of AND period_kind = 'month' "
            "AND dimension = 'all' AND funnel = 'strict'"
        )
        return self.scoped(
            "SELECT c.scope_kind, c.scope_id, c.stage, c.entered, c.advanced, c.lost, "
            "c.conversion_rate, c.benchmark_rate, c.is_bottleneck FROM (SELECT * "
            f"{month}) c JOIN (SELECT scope_kind, scope_id, MAX(period_start) AS period_start "
            f"{month} GROUP BY scope_kind, scope_id) latest "
            "USING (scope_kind, scope_id, period_start) ORDER BY c.stage_order",
            kind,
            scope_id,
        )

    def movement_rows(self, kind: str, scope_id: str) -> list[Record]:
        return self.scoped(
            "SELECT scope_kind, scope_id, bucket, deal_count, amount FROM "
            "mart_pipeline_movement WHERE as_of_date = :as_of AND week_start = :w",
            kind,
            scope_id,
            w=self.week_start,
        )

    def movement(self, kind: str, scope_id: str, t: dict[str, Any]) -> list[dict[str, Any]]:
        """The week's bridge in the labels' order; empty buckets left out but start and end."""
        order = {bucket: position for position, bucket in enumerate(t["bucket"])}
        rows = sorted(
            (
                row
                for row in self.movement_rows(kind, scope_id)
                if row["bucket"] in order
                and (row["deal_count"] > 0 or row["bucket"] in ("start", "end"))
            ),
            key=lambda row: order[row["bucket"]],
        )
        return [
            {
                "bucket": row["bucket"],
                "label": t["bucket"][row["bucket"]],
                "deal_count": row["deal_count"],
                "amount": row["amount"],
            }
            for row in rows
        ]

    def territory(self, r: Recipient, allowed: set[str], language: str) -> list[dict[str, Any]]:
        balance = self.records(
            "SELECT b.*, t.name FROM mart_territory_balance b LEFT JOIN "
            "dim_territory t USING (territory_id) WHERE b.as_of_date = :as_of"
        )
        mine = self.team_rows(
            "SELECT * FROM mart_territory_load WHERE as_of_date = :as_of", "owner_id", r
        )
        if r.team_id is not None:
            territories = {row["territory_id"] for row in mine}
            balance = [row for row in balance if row["territory_id"] in territories]
        # the reps over and under their fair share, by territory
        flagged: dict[tuple[str, str], list[str]] = {}
        for row in mine:
            if row["status"] in ("over", "under"):
                name = self.name_of(row["owner_id"], allowed, language)
                flagged.setdefault((row["territory_id"], row["status"]), []).append(name)
        return [
            {
                "name": row["name"],
                "cv": row["cv"],
                "cv_after": row["cv_after_rebalancing"],
                "over": ", ".join(flagged.get((row["territory_id"], "over"), [])),
                "under": ", ".join(flagged.get((row["territory_id"], "under"), [])),
            }
            for row in balance
        ]

    def banners(self, language: str) -> list[str]:
        """Warn when the data behind the digest is incomplete or stale."""
        t = labels(language)
        runs = self.q(
            "SELECT status, as_of_date, error, started_at FROM etl_run WHERE flow = 'nightly' "
            "AND status IN ('success', 'failed') ORDER BY started_at DESC"
        )
        out = []
        if len(runs) and runs.status.iat[0] == "failed":
            out.append(t["dq_failed_run"].format(error=runs.error.iat[0]))
        newest = runs.as_of_date[runs.status.eq("success")].max()
        if self.expected_day and pd.notna(newest) and newest.date() < self.expected_day:
            formats = Formats(t["locale"], self.settings.currency)
            out.append(t["dq_stale"].format(as_of=formats.date(newest.date())))
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
    env = templates()
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
