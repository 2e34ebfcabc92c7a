"""Odoo 16 and 17 (PostgreSQL): the CRM module's tables, as Odoo creates them, that the
adapter reads. Names of stages, teams, industries and lost reasons are jsonb translations.

Followed (odoo/odoo, read, not copied): `addons/crm/models/crm_lead.py` (fields tracked:
stage_id, user_id, active, expected_revenue, not date_deadline; date_closed is set when a
deal is won or lost and left as it was when a won deal is dragged back; company_currency
falls back to the company's currency when the deal has no company),
`addons/mail/models/mail_tracking_value.py` (`field` in 16, `field_id` from 17; monetary
values apart in 16; a many2one emptied is tracked as 0), `addons/crm/models/crm_stage.py`.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from loudou.config import Pipeline
from loudou.simulator import SimulatedCRM
from tests.replicas import (
    Replica,
    as_text,
    empty,
    field_history_as_read,
    first_stage_at_creation,
    number,
)

USER_PARTNERS = 1_000_000  # res_partner ids of users' own partners start after the accounts
OPEN_LEADS = 10_000_000  # crm_lead ids of leads that never converted
ACTIVITY_MESSAGES = 10_000_000  # mail_message ids of done activities
STAGE_FIELD, AMOUNT_FIELD, DEADLINE_FIELD, OWNER_FIELD = 101, 102, 103, 104
ACTIVITY_TYPES = {
    "call": "Call",
    "meeting": "Meeting",
    "email": "Email",
    "visit": "Visit",
    "note": "To-Do",
}


def _id(name: str = "id") -> sa.Column:
    return sa.Column(name, sa.Integer, primary_key=True)


def _ts(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime)


def _metadata(version: int) -> sa.MetaData:
    m = sa.MetaData()
    audit = lambda: [
        _ts("create_date"),
        _ts("write_date"),
        sa.Column("create_uid", sa.Integer),
        sa.Column("write_uid", sa.Integer),
    ]
    sa.Table(
        "res_currency",
        m,
        _id(),
        sa.Column("name", sa.String(3), nullable=False),
        sa.Column("symbol", sa.String, nullable=False),
    )
    sa.Table(
        "res_company",
        m,
        _id(),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("currency_id", sa.Integer, nullable=False),
    )
    sa.Table(
        "res_partner_industry",
        m,
        _id(),
        sa.Column("name", JSONB),
        sa.Column("full_name", JSONB),
        sa.Column("active", sa.Boolean),
        *audit(),
    )
    sa.Table(
        "res_partner",
        m,
        _id(),
        sa.Column("name", sa.String),
        sa.Column("company_id", sa.Integer),
        sa.Column("type", sa.String),
        sa.Column("is_company", sa.Boolean),
        sa.Column("active", sa.Boolean),
        sa.Column("user_id", sa.Integer),
        sa.Column("industry_id", sa.Integer),
        sa.Column("email", sa.String),
        sa.Column("phone", sa.String),
        sa.Column("website", sa.String),
        sa.Column("vat", sa.String),
        *audit(),
    )
    sa.Table(
        "res_users",
        m,
        _id(),
        sa.Column("company_id", sa.Integer, nullable=False),
        sa.Column("partner_id", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean),
        sa.Column("login", sa.String, nullable=False),
        sa.Column("share", sa.Boolean),
        *audit(),
    )
    sa.Table(
        "crm_team",
        m,
        _id(),
        sa.Column("name", JSONB, nullable=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("company_id", sa.Integer),
        sa.Column("active", sa.Boolean),
        sa.Column("sequence", sa.Integer),
        *audit(),
    )
    sa.Table(
        "crm_team_member",
        m,
        _id(),
        sa.Column("crm_team_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean),
        *audit(),
    )
    sa.Table(
        "crm_stage",
        m,
        _id(),
        sa.Column("name", JSONB, nullable=False),
        sa.Column("sequence", sa.Integer),
        sa.Column("is_won", sa.Boolean),
        sa.Column("fold", sa.Boolean),
        sa.Column("team_id", sa.Integer),
        *audit(),
    )
    sa.Table(
        "crm_lost_reason",
        m,
        _id(),
        sa.Column("name", JSONB, nullable=False),
        sa.Column("active", sa.Boolean),
        *audit(),
    )
    sa.Table("utm_source", m, _id(), sa.Column("name", sa.String, nullable=False), *audit())
    sa.Table(
        "crm_lead",
        m,
        _id(),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("type", sa.String, nullable=False),
        sa.Column("active", sa.Boolean),
        sa.Column("user_id", sa.Integer),
        sa.Column("team_id", sa.Integer),
        sa.Column("company_id", sa.Integer),
        sa.Column("partner_id", sa.Integer),
        sa.Column("stage_id", sa.Integer),
        sa.Column("probability", sa.Float),
        sa.Column("expected_revenue", sa.Numeric),
        sa.Column("date_deadline", sa.Date),
        _ts("date_closed"),
        _ts("date_conversion"),
        _ts("date_open"),
        _ts("date_last_stage_update"),
        sa.Column("lost_reason_id", sa.Integer),
        sa.Column("source_id", sa.Integer),
        sa.Column("priority", sa.String),
        *audit(),
    )
    sa.Table(
        "ir_model_fields",
        m,
        _id(),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("name", sa.String, nullable=False),
        sa.Column("ttype", sa.String),
    )
    sa.Table(
        "mail_activity_type",
        m,
        _id(),
        sa.Column("name", JSONB, nullable=False),
        sa.Column("category", sa.String),
        *audit(),
    )
    sa.Table(
        "mail_message",
        m,
        _id(),
        sa.Column("model", sa.String),
        sa.Column("res_id", sa.Integer),
        sa.Column("date", sa.DateTime),
        sa.Column("author_id", sa.Integer),
        sa.Column("message_type", sa.String),
        sa.Column("mail_activity_type_id", sa.Integer),
        sa.Column("body", sa.Text),
        *audit(),
    )
    field = (
        sa.Column("field", sa.Integer, nullable=False)
        if version < 17
        else sa.Column("field_id", sa.Integer)
    )
    values = [
        sa.Column(f"{age}_value_{kind}", kind_type)
        for age in ("old", "new")
        for kind, kind_type in [
            ("integer", sa.Integer),
            ("float", sa.Float),
            ("char", sa.String),
            ("datetime", sa.DateTime),
        ]
    ]
    if version < 17:  # 17 keeps monetary values in the float columns
        values += [
            sa.Column("old_value_monetary", sa.Float),
            sa.Column("new_value_monetary", sa.Float),
        ]
    sa.Table(
        "mail_tracking_value",
        m,
        _id(),
        field,
        *values,
        sa.Column("mail_message_id", sa.Integer, nullable=False),
        *audit(),
    )
    # the indexes Odoo creates on the tables the history queries join
    sa.Index(
        "mail_message_model_res_id_idx",
        m.tables["mail_message"].c.model,
        m.tables["mail_message"].c.res_id,
    )
    sa.Index(
        "mail_tracking_value_mail_message_id_index",
        m.tables["mail_tracking_value"].c.mail_message_id,
    )
    sa.Index("res_users_partner_id_index", m.tables["res_users"].c.partner_id)
    return m


def _translated(names: pd.Series) -> pd.Series:
    # a record created in a zh_CN session holds the name under both keys (Odoo >= 16)
    return names.map(lambda n: None if pd.isna(n) else {"en_US": n, "zh_CN": n})


def _with_unassignments(crm: SimulatedCRM) -> SimulatedCRM:
    """A few deals left without a salesperson for an hour after their creation, then given
    back: Odoo tracks the empty salesperson as 0."""
    t = {name: frame.copy() for name, frame in crm.tables.items()}
    opps = t["opportunities"]
    some = opps[opps.owner_id.notna()].iloc[::40]
    unassign = pd.DataFrame(
        {
            "opportunity_id": some.opportunity_id,
            "field": "owner_id",
            "changed_at": some.created_at + pd.Timedelta(minutes=30),
            "old_value": some.owner_id,
            "new_value": None,
        }
    )
    reassign = unassign.assign(
        changed_at=some.created_at + pd.Timedelta(minutes=90),
        old_value=None,
        new_value=some.owner_id,
    )
    t["field_history"] = pd.concat([t["field_history"], unassign, reassign], ignore_index=True)
    return SimulatedCRM(tables=t)


def replicate(crm: SimulatedCRM, pipeline: Pipeline, version: int = 17) -> Replica:
    crm = _with_unassignments(crm)
    t = crm.tables
    users, teams, accounts = t["users"], t["teams"], t["accounts"]
    opps, history, fields = t["opportunities"], t["stage_history"], t["field_history"]
    leads, activities = t["leads"], t["activities"]
    tables: dict[str, pd.DataFrame] = {}

    user_id = number(users.user_id)
    tables["res_currency"] = pd.DataFrame(
        {"id": [1], "name": [opps.currency.iloc[0]], "symbol": ["¥"]}
    )
    tables["res_company"] = pd.DataFrame({"id": [1], "name": ["漏斗演示公司"], "currency_id": [1]})
    tables["res_users"] = pd.DataFrame(
        {
            "id": user_id,
            "company_id": 1,
            "partner_id": user_id + USER_PARTNERS,
            "active": users.is_active,
            "login": users.email,
            "share": False,
            "create_date": users.hired_at,
            "write_date": users.updated_at,
            "create_uid": 1,
            "write_uid": 1,
        }
    )
    industries = accounts.industry.dropna().drop_duplicates().reset_index(drop=True)
    industry_id = pd.Series(industries.index + 1, index=industries.values)
    tables["res_partner_industry"] = pd.DataFrame(
        {
            "id": industry_id.values,
            "name": _translated(industries),
            "full_name": _translated(industries),
            "active": True,
        }
    )
    account_partners = pd.DataFrame(
        {
            "id": number(accounts.account_id),
            "name": accounts.name,
            "company_id": 1,
            "type": "contact",
            "is_company": True,
            "active": True,
            "user_id": number(accounts.owner_id),
            "industry_id": accounts.industry.map(industry_id),
            "email": accounts.email,
            "phone": accounts.phone,
            "website": accounts.website,
            "vat": accounts.tax_id,
            "create_date": accounts.created_at,
            "write_date": accounts.updated_at,
        }
    )
    user_partners = pd.DataFrame(
        {
            "id": user_id + USER_PARTNERS,
            "name": users.name,
            "type": "contact",
            "is_company": False,
            "active": True,
            "email": users.email,
            "create_date": users.hired_at,
            "write_date": users.updated_at,
        }
    )
    tables["res_partner"] = pd.concat([account_partners, user_partners], ignore_index=True)
    tables["crm_team"] = pd.DataFrame(
        {
            "id": number(teams.team_id),
            "name": _translated(teams.name),
            "user_id": number(teams.manager_id),
            "company_id": 1,
            "active": True,
            "sequence": 10,
            "create_date": teams.updated_at,
            "write_date": teams.updated_at,
        }
    )
    members = users[users.team_id.notna()]
    tables["crm_team_member"] = pd.DataFrame(
        {
            "id": range(1, len(members) + 1),
            "crm_team_id": number(members.team_id).values,
            "user_id": number(members.user_id).values,
            "active": True,
        }
    )

    open_stages = pipeline.open_stage_names
    stage_names = [*open_stages, pipeline.won_stage]
    stage_id = pd.Series(range(1, len(stage_names) + 1), index=stage_names)
    tables["crm_stage"] = pd.DataFrame(
        {
            "id": stage_id.values,
            "name": _translated(pd.Series(stage_names)),
            "sequence": stage_id.values * 10,
            "is_won": [False] * len(open_stages) + [True],
            "fold": False,
        }
    )
    reasons = opps.lost_reason.dropna().drop_duplicates().reset_index(drop=True)
    reason_id = pd.Series(reasons.index + 1, index=reasons.values)
    tables["crm_lost_reason"] = pd.DataFrame(
        {"id": reason_id.values, "name": _translated(reasons), "active": True}
    )
    sources = pd.concat([opps.lead_source, leads.source]).dropna().drop_duplicates()
    source_id = pd.Series(range(1, len(sources) + 1), index=sources.values)
    tables["utm_source"] = pd.DataFrame({"id": source_id.values, "name": sources.values})
    tables["ir_model_fields"] = pd.DataFrame(
        {
            "id": [STAGE_FIELD, AMOUNT_FIELD, DEADLINE_FIELD, OWNER_FIELD],
            "model": "crm.lead",
            "name": ["stage_id", "expected_revenue", "date_deadline", "user_id"],
            "ttype": ["many2one", "monetary", "date", "many2one"],
        }
    )

    # a lost deal keeps the stage it was lost in; a won one sits in the is_won stage
    last_open = (
        history[history.to_stage.ne(pipeline.lost_stage)].groupby("opportunity_id").to_stage.last()
    )
    crm_stage = opps.opportunity_id.map(last_open).where(opps.status.ne("won"), pipeline.won_stage)
    converted = leads[leads.status.eq("converted")].drop_duplicates("opportunity_id")
    lead_created = opps.opportunity_id.map(converted.set_index("opportunity_id").created_at)
    probability = crm_stage.map({s.name: s.probability * 100 for s in pipeline.stages})
    every = pd.Series(range(len(opps)), index=opps.index)
    # won deals dragged back to an open stage keep the date_closed of their win
    dragged_back = opps.status.eq("open") & every.mod(10).eq(3)
    date_closed = opps.closed_at.where(~dragged_back, opps.created_at + pd.Timedelta(days=5))
    tables["crm_lead"] = pd.concat(
        [
            pd.DataFrame(
                {
                    "id": number(opps.opportunity_id),
                    "name": opps.name,
                    "type": "opportunity",
                    "active": opps.status.ne("lost") & ~opps.is_deleted,
                    "user_id": number(opps.owner_id),
                    # some deals belong to no company: the main company's currency then
                    "company_id": pd.Series(1, index=opps.index).where(every.mod(7).ne(2)),
                    "partner_id": number(opps.account_id),
                    "stage_id": crm_stage.map(stage_id),
                    "probability": probability.where(
                        opps.status.eq("open"), opps.status.map({"won": 100.0, "lost": 0.0})
                    ),
                    "expected_revenue": opps.amount,
                    "date_deadline": opps.expected_close_date,
                    "date_closed": date_closed,
                    "date_conversion": opps.created_at.where(lead_created.notna()),
                    "lost_reason_id": opps.lost_reason.map(reason_id),
                    "source_id": opps.lead_source.map(source_id),
                    "create_date": lead_created.fillna(opps.created_at),
                    "write_date": opps.updated_at,
                    "create_uid": number(
                        history.groupby("opportunity_id")
                        .changed_by.first()
                        .reindex(opps.opportunity_id)
                    ).values,
                }
            ),
            _open_leads(leads, source_id),
        ],
        ignore_index=True,
    )

    # stage changes Odoo tracks: not the first stage (the lead's creation) nor losing
    changes = history[history.from_stage.notna() & history.to_stage.ne(pipeline.lost_stage)]
    stage_tracking = pd.DataFrame(
        {
            "res_id": number(changes.opportunity_id),
            "date": changes.changed_at,
            "author": number(changes.changed_by),
            "field": STAGE_FIELD,
            "old_value_integer": changes.from_stage.map(stage_id),
            "new_value_integer": changes.to_stage.map(stage_id),
            "old_value_char": changes.from_stage,
            "new_value_char": changes.to_stage,
        }
    )
    fields = fields[fields.old_value.ne(fields.new_value)]  # Odoo tracks real changes only
    amounts = fields[fields.field.eq("amount")]
    owners = fields[fields.field.eq("owner_id")]
    owner_of = opps.set_index("opportunity_id").owner_id
    money = "monetary" if version < 17 else "float"
    field_tracking = pd.concat(
        [
            pd.DataFrame(
                {
                    "res_id": number(amounts.opportunity_id),
                    "date": amounts.changed_at,
                    "author": number(amounts.opportunity_id.map(owner_of)),
                    "field": AMOUNT_FIELD,
                    f"old_value_{money}": amounts.old_value.astype(float),
                    f"new_value_{money}": amounts.new_value.astype(float),
                }
            ),
            pd.DataFrame(
                {
                    "res_id": number(owners.opportunity_id),
                    "date": owners.changed_at,
                    "author": number(owners.opportunity_id.map(owner_of)),
                    "field": OWNER_FIELD,
                    # an empty salesperson is tracked as 0
                    "old_value_integer": number(owners.old_value).fillna(0),
                    "new_value_integer": number(owners.new_value).fillna(0),
                }
            ),
        ],
        ignore_index=True,
    )
    tracking = pd.concat([stage_tracking, field_tracking], ignore_index=True)
    tracking["id"] = tracking["mail_message_id"] = range(1, len(tracking) + 1)
    if version >= 17:
        tracking = tracking.rename(columns={"field": "field_id"})
    tables["mail_tracking_value"] = tracking.drop(columns=["res_id", "date", "author"])
    notifications = pd.DataFrame(
        {
            "id": tracking.id,
            "model": "crm.lead",
            "res_id": tracking.res_id,
            "date": tracking.date,
            "author_id": tracking.author + USER_PARTNERS,
            "message_type": "notification",
            "create_date": tracking.date,
            "write_date": tracking.date,
        }
    )

    types = pd.Series(list(ACTIVITY_TYPES.values()))
    type_id = pd.Series(types.index + 1, index=list(ACTIVITY_TYPES))
    tables["mail_activity_type"] = pd.DataFrame({"id": type_id.values, "name": _translated(types)})
    done = pd.DataFrame(
        {
            "id": number(activities.activity_id, ACTIVITY_MESSAGES),
            "model": "crm.lead",
            "res_id": number(activities.opportunity_id),
            "date": activities.occurred_at,
            "author_id": number(activities.owner_id, USER_PARTNERS),
            "message_type": "notification",
            "mail_activity_type_id": activities.type.map(type_id),
            "body": "<p>完成</p>",
            "create_date": activities.occurred_at,
            "write_date": activities.updated_at,
        }
    )
    tables["mail_message"] = pd.concat([notifications, done], ignore_index=True)
    return Replica(
        f"odoo{version}", _metadata(version), tables, _canonical(crm, pipeline, converted)
    )


def _open_leads(leads: pd.DataFrame, source_id: pd.Series) -> pd.DataFrame:
    unconverted = leads[leads.status.ne("converted")]
    return pd.DataFrame(
        {
            "id": number(unconverted.lead_id, OPEN_LEADS),
            "name": "线索",
            "type": "lead",
            "active": unconverted.status.eq("open"),
            "user_id": number(unconverted.owner_id),
            "company_id": 1,
            "partner_id": number(unconverted.account_id),
            "probability": 10.0,
            "source_id": unconverted.source.map(source_id),
            "create_date": unconverted.created_at,
            "write_date": unconverted.updated_at,
        }
    )


def _canonical(crm: SimulatedCRM, pipeline: Pipeline, converted: pd.DataFrame) -> dict:
    """The simulated CRM as the Odoo adapter sees it: Odoo's ids; no territories, targets,
    competitors or future leaving dates; a converted lead is its opportunity's record."""
    t = {name: frame.copy() for name, frame in crm.tables.items()}
    users, opps = t["users"], t["opportunities"]
    leader = t["teams"].set_index("team_id").manager_id
    team_leader = users.team_id.map(leader)
    users["manager_id"] = team_leader.where(team_leader.ne(users.user_id))
    users["territory_id"] = None
    users["left_at"] = users.updated_at.where(~users.is_active)
    t["accounts"]["territory_id"] = None
    opps["competitor"] = None
    t["territories"], t["targets"] = empty("territories"), empty("targets")
    history = t["stage_history"]
    first_stage_at_creation(history, opps)
    lost = history.to_stage.eq(pipeline.lost_stage)
    history.loc[lost, "changed_by"] = history.opportunity_id[lost].map(
        opps.set_index("opportunity_id").owner_id
    )
    t["field_history"] = field_history_as_read(
        t["field_history"], history, pipeline, ["amount", "owner_id"]
    )

    opp = opps.set_index("opportunity_id")
    as_lead = pd.DataFrame(
        {
            "lead_id": converted.opportunity_id,
            "source": converted.opportunity_id.map(opp.lead_source),
            "owner_id": converted.opportunity_id.map(opp.owner_id),
            "account_id": converted.opportunity_id.map(opp.account_id),
            "status": "converted",
            "created_at": converted.created_at,
            "converted_at": converted.converted_at,
            "opportunity_id": converted.opportunity_id,
            "updated_at": converted.opportunity_id.map(opp.updated_at),
        }
    )
    unconverted = t["leads"][t["leads"].status.ne("converted")].copy()
    unconverted["lead_id"] = as_text(number(unconverted.lead_id, OPEN_LEADS))
    as_lead["lead_id"] = as_text(number(as_lead.lead_id))
    t["leads"] = pd.concat([as_lead, unconverted], ignore_index=True)
    t["activities"]["activity_id"] = as_text(number(t["activities"].activity_id, ACTIVITY_MESSAGES))
    for name, columns in {
        "users": ["user_id", "manager_id", "team_id"],
        "teams": ["team_id", "manager_id"],
        "accounts": ["account_id", "owner_id"],
        "opportunities": ["opportunity_id", "account_id", "owner_id"],
        "stage_history": ["opportunity_id", "changed_by"],
        "field_history": ["opportunity_id"],
        "leads": ["owner_id", "account_id", "opportunity_id"],
        "activities": ["opportunity_id", "account_id", "owner_id"],
    }.items():
        for column in columns:
            t[name][column] = as_text(number(t[name][column]))
    owner_rows = t["field_history"].field.eq("owner_id")
    for column in ("old_value", "new_value"):
        t["field_history"].loc[owner_rows, column] = as_text(
            number(t["field_history"][column][owner_rows])
        )
    return t
