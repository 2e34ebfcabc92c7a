"""SuiteCRM 7 on MariaDB (utf8mb4): opportunities and their audit, accounts, users with
their e-mail addresses and security groups (the teams), leads, and the activity modules.

Followed (salesagility/SuiteCRM 7.14.6, read, not copied): `modules/Opportunities/vardefs.php`
(columns and types: amounts are doubles; audited: sales_stage, date_closed,
amount_usdollar, probability, assigned_user_id, not amount), `modules/Currencies/vardefs.php`
(conversion_rate, a double; amount_usdollar = amount / the deal currency's rate, the
system currency -99 at 1), `include/utils/db_utils.php` (to_html: text is stored with
" < > ' as &quot; &lt; &gt; &#039;), `include/language/en_us.lang.php` (call and meeting
status Planned / Held / Not Held, e-mail status draft, sent, archived, send_error, ...),
`modules/*/vardefs.php` of Calls, Meetings, Tasks, Notes and Emails. The audit table is
written on update only (not on creation).
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from loudou.config import Pipeline
from loudou.simulator import SimulatedCRM
from tests.replicas import (
    Replica,
    closed_at_last_stage_change,
    empty,
    field_history_as_read,
    first_stage_at_creation,
)

# the simulator's stages as SuiteCRM's stock sales_stage keys
STOCK_STAGES = ["Prospecting", "Qualification", "Needs Analysis", "Negotiation/Review"]
WON, LOST = "Closed Won", "Closed Lost"
# the system currency (-99) is SuiteCRM's stock US Dollar; deals are in yuan at this rate
YUAN_PER_DOLLAR = 7.1
ACTIVITY_TABLES = {
    "call": "calls",
    "meeting": "meetings",
    "visit": "meetings",
    "email": "emails",
    "note": "notes",
}


def _metadata() -> sa.MetaData:
    m = sa.MetaData()
    ident = lambda name="id": sa.Column(name, sa.CHAR(36), primary_key=True)
    ref = lambda name: sa.Column(name, sa.CHAR(36))
    vc = lambda name, n=255: sa.Column(name, sa.String(n))
    dt = lambda name: sa.Column(name, sa.DateTime)
    bean = lambda: [
        dt("date_entered"),
        dt("date_modified"),
        ref("modified_user_id"),
        ref("created_by"),
        sa.Column("deleted", sa.Boolean, default=False),
    ]
    sa.Table(
        "users",
        m,
        ident(),
        vc("user_name", 60),
        vc("first_name"),
        vc("last_name"),
        ref("reports_to_id"),
        vc("status", 100),
        vc("employee_status", 100),
        sa.Column("is_admin", sa.Boolean),
        *bean(),
    )
    sa.Table("email_addresses", m, ident(), vc("email_address"), vc("email_address_caps"), *bean())
    sa.Table(
        "email_addr_bean_rel",
        m,
        ident(),
        ref("email_address_id"),
        ref("bean_id"),
        vc("bean_module", 100),
        sa.Column("primary_address", sa.Boolean),
        *bean(),
    )
    sa.Table("securitygroups", m, ident(), vc("name"), ref("assigned_user_id"), *bean())
    sa.Table(
        "securitygroups_users",
        m,
        ident(),
        ref("securitygroup_id"),
        ref("user_id"),
        sa.Column("primary_group", sa.Boolean),
        dt("date_modified"),
        sa.Column("deleted", sa.Boolean, default=False),
    )
    sa.Table(
        "accounts",
        m,
        ident(),
        vc("name", 150),
        ref("assigned_user_id"),
        vc("account_type", 50),
        vc("industry", 50),
        vc("phone_office", 100),
        vc("website"),
        vc("billing_address_state", 100),
        vc("sic_code", 10),
        *bean(),
    )
    sa.Table(
        "currencies",
        m,
        ident(),
        vc("name", 36),
        vc("symbol", 36),
        vc("iso4217", 3),
        sa.Column("conversion_rate", sa.Double),
        vc("status", 100),
        *bean(),
    )
    sa.Table(
        "opportunities",
        m,
        ident(),
        vc("name", 50),
        ref("assigned_user_id"),
        vc("opportunity_type"),
        vc("lead_source", 50),
        sa.Column("amount", sa.Double),
        sa.Column("amount_usdollar", sa.Double),
        ref("currency_id"),
        sa.Column("date_closed", sa.Date),
        vc("next_step", 100),
        vc("sales_stage"),
        sa.Column("probability", sa.Double),
        *bean(),
    )
    sa.Table(
        "accounts_opportunities",
        m,
        ident(),
        ref("opportunity_id"),
        ref("account_id"),
        dt("date_modified"),
        sa.Column("deleted", sa.Boolean, default=False),
    )
    sa.Table(
        "opportunities_audit",
        m,
        ident(),
        ref("parent_id"),
        dt("date_created"),
        ref("created_by"),
        vc("field_name", 100),
        vc("data_type", 100),
        vc("before_value_string"),
        vc("after_value_string"),
        sa.Column("before_value_text", sa.Text),
        sa.Column("after_value_text", sa.Text),
    )
    sa.Table(
        "leads",
        m,
        ident(),
        ref("assigned_user_id"),
        vc("last_name", 100),
        vc("account_name"),
        ref("account_id"),
        ref("opportunity_id"),
        vc("status", 100),
        vc("lead_source", 100),
        sa.Column("converted", sa.Boolean),
        *bean(),
    )
    for table, start in [
        ("calls", "date_start"),
        ("meetings", "date_start"),
        ("tasks", "date_start"),
        ("notes", None),
        ("emails", "date_sent_received"),
    ]:
        columns = [
            ident(),
            vc("name"),
            ref("assigned_user_id"),
            vc("parent_type", 255),
            ref("parent_id"),
            vc("status", 100),
            *bean(),
        ]
        if start:
            columns.append(dt(start))
        sa.Table(table, m, *columns)
    # the indexes SuiteCRM's vardefs create on what the adapter joins
    t = m.tables
    sa.Index(
        "idx_oppid_del_accid",
        t["accounts_opportunities"].c.opportunity_id,
        t["accounts_opportunities"].c.deleted,
        t["accounts_opportunities"].c.account_id,
    )
    sa.Index("idx_opportunities_parent_id", t["opportunities_audit"].c.parent_id)
    sa.Index(
        "idx_bean_id", t["email_addr_bean_rel"].c.bean_id, t["email_addr_bean_rel"].c.bean_module
    )
    sa.Index("securitygroups_users_idxb", t["securitygroups_users"].c.user_id)
    return m


def to_html(text: pd.Series) -> pd.Series:
    """Text as SuiteCRM stores it (include/utils/db_utils.php, $toHTML)."""
    for plain, entity in [('"', "&quot;"), ("<", "&lt;"), (">", "&gt;"), ("'", "&#039;")]:
        text = text.str.replace(plain, entity, regex=False)
    return text


def _with_markup(crm: SimulatedCRM) -> SimulatedCRM:
    """Names users type with quotes and angle brackets (and an ampersand, which SuiteCRM
    keeps as it is), where they still fit their columns once stored."""
    t = {name: frame.copy() for name, frame in crm.tables.items()}
    for table, column, width in [
        ("opportunities", "name", 50),
        ("accounts", "name", 150),
        ("users", "name", 255),
        ("teams", "name", 255),
    ]:
        names = t[table][column]
        marked = pd.Series(
            [[f'"{n}"', f"{n} <二期>", f"{n}'s A&B", n][i % 4] for i, n in enumerate(names)],
            index=names.index,
        )
        t[table][column] = marked.where(to_html(marked).str.len() <= width, names)
    return SimulatedCRM(tables=t)


def replicate(crm: SimulatedCRM, pipeline: Pipeline) -> Replica:
    crm = _with_markup(crm)
    t = crm.tables
    users, teams, accounts = t["users"], t["teams"], t["accounts"]
    opps, history, fields = t["opportunities"], t["stage_history"], t["field_history"]
    stock = dict(zip(pipeline.open_stage_names, STOCK_STAGES, strict=True))
    stock |= {pipeline.won_stage: WON, pipeline.lost_stage: LOST}
    tables: dict[str, pd.DataFrame] = {}
    tables["users"] = pd.DataFrame(
        {
            "id": users.user_id,
            "user_name": users.email.str.split("@").str[0],
            "last_name": to_html(users.name),
            "reports_to_id": users.manager_id,
            "status": users.is_active.map({True: "Active", False: "Inactive"}),
            "employee_status": users.is_active.map({True: "Active", False: "Terminated"}),
            "date_entered": users.hired_at,
            "date_modified": users.updated_at,
            "deleted": False,
        }
    )
    addresses = pd.concat(
        [
            users[["user_id", "email"]]
            .set_axis(["bean_id", "email"], axis=1)
            .assign(bean_module="Users"),
            accounts[["account_id", "email"]]
            .set_axis(["bean_id", "email"], axis=1)
            .assign(bean_module="Accounts"),
        ],
        ignore_index=True,
    ).dropna()
    address_ids = [f"ea-{i:08d}" for i in range(len(addresses))]
    tables["email_addresses"] = pd.DataFrame(
        {
            "id": address_ids,
            "email_address": addresses.email.values,
            "email_address_caps": addresses.email.str.upper().values,
            "deleted": False,
        }
    )
    tables["email_addr_bean_rel"] = pd.DataFrame(
        {
            "id": [f"eb-{i:08d}" for i in range(len(addresses))],
            "email_address_id": address_ids,
            "bean_id": addresses.bean_id.values,
            "bean_module": addresses.bean_module.values,
            "primary_address": True,
            "deleted": False,
        }
    )
    tables["securitygroups"] = pd.DataFrame(
        {
            "id": teams.team_id,
            "name": to_html(teams.name),
            "date_entered": teams.updated_at,
            "date_modified": teams.updated_at,
            "deleted": False,
        }
    )
    members = users[users.team_id.notna()]
    tables["securitygroups_users"] = pd.DataFrame(
        {
            "id": "sgu-" + members.user_id,
            "securitygroup_id": members.team_id,
            "user_id": members.user_id,
            "primary_group": True,
            "deleted": False,
        }
    )
    tables["accounts"] = pd.DataFrame(
        {
            "id": accounts.account_id,
            "name": to_html(accounts.name),
            "assigned_user_id": accounts.owner_id,
            "industry": accounts.industry,
            "phone_office": accounts.phone,
            "website": accounts.website,
            "date_entered": accounts.created_at,
            "date_modified": accounts.updated_at,
            "deleted": False,
        }
    )
    tables["currencies"] = pd.DataFrame(
        {
            "id": ["cur-cny"],
            "name": ["人民币"],
            "symbol": ["¥"],
            "iso4217": ["CNY"],
            "conversion_rate": [YUAN_PER_DOLLAR],
            "status": ["Active"],
            "deleted": [False],
        }
    )
    tables["opportunities"] = pd.DataFrame(
        {
            "id": opps.opportunity_id,
            "name": to_html(opps.name),
            "assigned_user_id": opps.owner_id,
            "lead_source": opps.lead_source,
            "amount": opps.amount,
            "amount_usdollar": opps.amount / YUAN_PER_DOLLAR,
            "currency_id": opps.currency.map({"CNY": "cur-cny"}).fillna("-99"),
            "date_closed": opps.expected_close_date,
            "sales_stage": opps.stage.map(stock),
            "date_entered": opps.created_at,
            "date_modified": opps.updated_at,
            "created_by": history.groupby("opportunity_id")
            .changed_by.first()
            .reindex(opps.opportunity_id)
            .values,
            "deleted": opps.is_deleted,
        }
    )
    tables["accounts_opportunities"] = pd.DataFrame(
        {
            "id": "ao-" + opps.opportunity_id,
            "opportunity_id": opps.opportunity_id,
            "account_id": opps.account_id,
            "deleted": False,
        }
    )
    stage_changes = history[history.from_stage.notna()]
    amounts = fields[fields.field.eq("amount") & fields.old_value.ne(fields.new_value)]
    closes = fields[fields.field.eq("expected_close_date") & fields.old_value.ne(fields.new_value)]
    owner_of = opps.set_index("opportunity_id").owner_id
    audit = pd.concat(
        [
            pd.DataFrame(
                {
                    "parent_id": stage_changes.opportunity_id,
                    "date_created": stage_changes.changed_at,
                    "created_by": stage_changes.changed_by,
                    "field_name": "sales_stage",
                    "data_type": "enum",
                    "before_value_string": stage_changes.from_stage.map(stock),
                    "after_value_string": stage_changes.to_stage.map(stock),
                }
            ),
            pd.DataFrame(
                {
                    "parent_id": amounts.opportunity_id,
                    "date_created": amounts.changed_at,
                    "created_by": amounts.opportunity_id.map(owner_of),
                    "field_name": "amount_usdollar",
                    "data_type": "currency",
                    "before_value_string": _in_dollars(amounts.old_value),
                    "after_value_string": _in_dollars(amounts.new_value),
                }
            ),
            pd.DataFrame(
                {
                    "parent_id": closes.opportunity_id,
                    "date_created": closes.changed_at,
                    "created_by": closes.opportunity_id.map(owner_of),
                    "field_name": "date_closed",
                    "data_type": "date",
                    "before_value_string": closes.old_value,
                    "after_value_string": closes.new_value,
                }
            ),
        ],
        ignore_index=True,
    )
    audit.insert(0, "id", [f"au-{i:08d}" for i in range(len(audit))])
    tables["opportunities_audit"] = audit
    leads = t["leads"]
    tables["leads"] = pd.DataFrame(
        {
            "id": leads.lead_id,
            "assigned_user_id": leads.owner_id,
            "last_name": "线索",
            "account_id": leads.account_id,
            "opportunity_id": leads.opportunity_id,
            "status": leads.status.map(
                {"open": "In Process", "converted": "Converted", "disqualified": "Dead"}
            ),
            "lead_source": leads.source,
            "converted": leads.status.eq("converted"),
            "date_entered": leads.created_at,
            "date_modified": leads.updated_at,
            "deleted": False,
        }
    )
    activities = t["activities"]
    done_status = {"calls": "Held", "meetings": "Held", "emails": "archived"}
    for type_, table in ACTIVITY_TABLES.items():
        rows = activities[activities.type.eq(type_)]
        frame = pd.DataFrame(
            {
                "id": rows.activity_id,
                "name": "跟进",
                "assigned_user_id": rows.owner_id,
                "parent_type": "Opportunities",
                "parent_id": rows.opportunity_id,
                "status": done_status.get(table),
                "date_entered": rows.occurred_at,
                "date_modified": rows.updated_at,
                "deleted": False,
            }
        )
        tables[table] = pd.concat([tables.get(table), frame], ignore_index=True)
    _not_done(tables)
    for table, frame in tables.items():
        if table == "emails":
            frame["date_sent_received"] = frame.date_entered
        elif table in {"calls", "meetings"}:
            frame["date_start"] = frame.date_entered
    return Replica("suitecrm", _metadata(), tables, _canonical(crm, pipeline))


def _in_dollars(amounts: pd.Series) -> pd.Series:
    """An audited amount_usdollar as SuiteCRM writes a PHP float: the shortest exact text."""
    dollars = pd.to_numeric(amounts) / YUAN_PER_DOLLAR
    return dollars.map(repr).where(dollars.notna())


def _not_done(tables: dict[str, pd.DataFrame]) -> None:
    """Calls and meetings planned or not held, e-mails in draft or that failed, each a day
    after the latest activity of its deal: none of them happened."""
    for table, statuses in [
        ("calls", ["Planned", "Not Held"]),
        ("meetings", ["Planned", "Not Held"]),
        ("emails", ["draft", "send_error"]),
    ]:
        done = tables[table]
        for status in statuses:
            latest = done.sort_values("date_entered").drop_duplicates("parent_id", keep="last")
            undone = latest.head(15).assign(
                id=lambda f, s=status: f.id.str[:20] + "-" + s.replace(" ", ""),
                status=status,
                date_entered=latest.date_entered + pd.Timedelta(days=1),
                date_modified=latest.date_modified + pd.Timedelta(days=1),
            )
            tables[table] = pd.concat([tables[table], undone], ignore_index=True)


def _canonical(crm: SimulatedCRM, pipeline: Pipeline) -> dict:
    """The simulated CRM as the SuiteCRM adapter sees it: no territories, targets, lost
    reasons, competitors, tax ids or future leaving dates; a visit is a meeting; the first
    stage starts at the deal's creation; names as typed (the adapter decodes what SuiteCRM
    stored)."""
    t = {name: frame.copy() for name, frame in crm.tables.items()}
    users, opps, history = t["users"], t["opportunities"], t["stage_history"]
    users["territory_id"] = None
    users["left_at"] = users.updated_at.where(~users.is_active)
    t["accounts"]["territory_id"] = None
    t["accounts"]["tax_id"] = None
    opps[["lost_reason", "competitor"]] = None
    t["territories"], t["targets"] = empty("territories"), empty("targets")
    first_stage_at_creation(history, opps)
    closed_at_last_stage_change(history, opps)
    t["field_history"] = field_history_as_read(
        t["field_history"], history, pipeline, ["amount", "expected_close_date", "owner_id"]
    )
    t["activities"]["type"] = t["activities"].type.replace({"visit": "meeting"})
    return t
