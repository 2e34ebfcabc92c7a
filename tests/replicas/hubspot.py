"""HubSpot as Fivetran replicates it into PostgreSQL: deals with their stage stays
(deal_stage), pipelines and stages, owners, teams, companies, engagements and property
history.

Followed (fivetran/dbt_hubspot_source, read, not copied): `models/src_hubspot.yml` (tables
and columns; `closed_won` "indicating if the pipeline stage is closed", deprecated for
`is_closed`; owner's `active_user_id`, "null if owner is not an active user"),
`CHANGELOG.md` (PR #146: the connector renamed `closed_won` to `is_closed`; the May 2023
update: engagements from HubSpot's v3 API in typed tables), `macros/get_owner_columns.sql`,
`macros/get_deal_pipeline_stage_columns.sql`, `macros/get_engagement_columns.sql` and
`macros/get_engagement_{call,email,meeting,note}_columns.sql`. Fivetran's PostgreSQL
destination stores instants as `timestamp with time zone`; HubSpot's date properties
(closedate) are the portal's midnight of the day, and property history gives a date's value
as epoch milliseconds.

Two shapes, as connectors in the field have them:
- `legacy`: `deal_pipeline_stage.closed_won` only (true for Closed Won and Closed Lost alike),
  engagements from the v1 API (owner, time and active on `engagement`);
- `current`: `is_closed` only; engagements from the v3 API: `engagement` keeps its id and
  type, owner and time live in `engagement_call`, `_email`, `_meeting` and `_note`, deleted
  ones flagged `_fivetran_deleted`.
"""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from loudou.config import Pipeline
from loudou.simulator import SimulatedCRM
from tests.replicas import (
    Replica,
    as_text,
    closed_at_last_stage_change,
    empty,
    field_history_as_read,
    first_stage_at_creation,
    number,
)

# the simulator's stages as HubSpot's stock sales pipeline labels them
STOCK_STAGES = [
    "Appointment Scheduled",
    "Qualified To Buy",
    "Presentation Scheduled",
    "Contract Sent",
]
STAGE_IDS = [
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "contractsent",
    "closedwon",
    "closedlost",
]
END_OF_TIME = pd.Timestamp("9999-12-31 23:59:59", tz="UTC")
SHAPES = ("legacy", "current")
# the portal's time zone: its date properties are midnight there
PORTAL_TIMEZONE = "Asia/Shanghai"
V3_ENGAGEMENTS = {"call": "call", "email": "email", "meeting": "meeting", "visit": "meeting"}


def _metadata(shape: str) -> sa.MetaData:
    m = sa.MetaData()
    big = lambda name, **kw: sa.Column(name, sa.BigInteger, **kw)
    text = lambda name, **kw: sa.Column(name, sa.Text, **kw)
    ts = lambda name, **kw: sa.Column(name, sa.DateTime(timezone=True), **kw)
    flag = lambda name: sa.Column(name, sa.Boolean)
    synced = lambda: [ts("_fivetran_synced")]
    sa.Table(
        "owner",
        m,
        big("owner_id", primary_key=True),
        big("portal_id"),
        text("type"),
        text("first_name"),
        text("last_name"),
        text("email"),
        ts("created_at"),
        ts("updated_at"),
        big("active_user_id"),
        *synced(),
    )
    sa.Table("team", m, big("id", primary_key=True), text("name"), *synced())
    sa.Table(
        "owner_team",
        m,
        big("owner_id", primary_key=True),
        big("team_id", primary_key=True),
        flag("is_team_primary"),
        *synced(),
    )
    sa.Table(
        "deal_pipeline",
        m,
        text("pipeline_id", primary_key=True),
        text("label"),
        flag("active"),
        sa.Column("display_order", sa.Integer),
        flag("_fivetran_deleted"),
        ts("created_at"),
        ts("updated_at"),
        *synced(),
    )
    sa.Table(
        "deal_pipeline_stage",
        m,
        text("stage_id", primary_key=True),
        text("pipeline_id"),
        text("label"),
        sa.Column("probability", sa.Float),
        flag("active"),
        sa.Column("display_order", sa.Integer),
        flag("closed_won" if shape == "legacy" else "is_closed"),
        flag("_fivetran_deleted"),
        ts("created_at"),
        ts("updated_at"),
        *synced(),
    )
    sa.Table(
        "company",
        m,
        big("id", primary_key=True),
        big("portal_id"),
        flag("is_deleted"),
        text("property_name"),
        text("property_industry"),
        text("property_phone"),
        text("property_website"),
        text("property_domain"),
        big("property_hubspot_owner_id"),
        ts("property_createdate"),
        ts("property_hs_lastmodifieddate"),
        *synced(),
    )
    sa.Table(
        "deal",
        m,
        big("deal_id", primary_key=True),
        big("portal_id"),
        flag("is_deleted"),
        text("deal_pipeline_id"),
        text("deal_pipeline_stage_id"),
        big("owner_id"),
        text("property_dealname"),
        sa.Column("property_amount", sa.Float),
        ts("property_closedate"),
        ts("property_createdate"),
        ts("property_hs_lastmodifieddate"),
        text("property_closed_lost_reason"),
        text("property_deal_currency_code"),
        text("property_dealtype"),
        text("property_lead_source"),
        *synced(),
    )
    sa.Table(
        "deal_stage",
        m,
        big("deal_id", primary_key=True),
        ts("_fivetran_start", primary_key=True),
        text("value"),
        ts("date_entered"),
        text("source"),
        text("source_id"),
        ts("_fivetran_end"),
        flag("_fivetran_active"),
        *synced(),
    )
    sa.Table(
        "deal_company",
        m,
        big("deal_id", primary_key=True),
        big("company_id", primary_key=True),
        text("type"),
        *synced(),
    )
    sa.Table(
        "deal_property_history",
        m,
        big("deal_id", primary_key=True),
        text("name", primary_key=True),
        ts("timestamp", primary_key=True),
        text("value"),
        text("source"),
        text("source_id"),
        *synced(),
    )
    sa.Table(
        "engagement",
        m,
        big("id", primary_key=True),
        big("portal_id"),
        text("type"),
        flag("active"),
        big("owner_id"),
        ts("timestamp"),
        ts("created_at"),
        *synced(),
    )
    if shape == "current":
        for kind in ("call", "email", "meeting", "note"):
            sa.Table(
                f"engagement_{kind}",
                m,
                big("engagement_id", primary_key=True),
                text("type"),
                ts("property_hs_createdate"),
                ts("property_hs_timestamp"),
                big("property_hubspot_owner_id"),
                big("property_hubspot_team_id"),
                *([text("body")] if kind == "note" else []),
                flag("_fivetran_deleted"),
                *synced(),
            )
    sa.Table(
        "engagement_deal",
        m,
        big("engagement_id", primary_key=True),
        big("deal_id", primary_key=True),
        *synced(),
    )
    return m


def _instants(frame: pd.DataFrame) -> pd.DataFrame:
    """Timestamps as Fivetran's PostgreSQL destination stores them: with time zone."""
    times = frame.select_dtypes("datetime64").columns
    return frame.assign(**{c: frame[c].dt.tz_localize("UTC") for c in times})


def portal_midnight(days: pd.Series) -> pd.Series:
    """A HubSpot date property: the portal's midnight of the day, as an instant."""
    return pd.to_datetime(days).dt.tz_localize(PORTAL_TIMEZONE).dt.tz_convert("UTC")


def replicate(crm: SimulatedCRM, pipeline: Pipeline, shape: str = "current") -> Replica:
    assert shape in SHAPES
    t = crm.tables
    users, teams, accounts = t["users"], t["teams"], t["accounts"]
    opps, history, fields = t["opportunities"], t["stage_history"], t["field_history"]
    names = [*pipeline.open_stage_names, pipeline.won_stage, pipeline.lost_stage]
    stage_id = dict(zip(names, STAGE_IDS, strict=True))
    tables: dict[str, pd.DataFrame] = {}
    tables["owner"] = pd.DataFrame(
        {
            "owner_id": number(users.user_id),
            "type": "PERSON",
            "first_name": users.name,
            "email": users.email,
            "created_at": users.hired_at,
            "updated_at": users.updated_at,
            "active_user_id": number(users.user_id, 9_000_000).where(users.is_active),
        }
    )
    tables["team"] = pd.DataFrame(
        {"id": number(teams.team_id), "name": teams.name, "_fivetran_synced": teams.updated_at}
    )
    members = users[users.team_id.notna()]
    tables["owner_team"] = pd.DataFrame(
        {
            "owner_id": number(members.user_id),
            "team_id": number(members.team_id),
            "is_team_primary": True,
        }
    )
    tables["deal_pipeline"] = pd.DataFrame(
        {"pipeline_id": ["default"], "label": [pipeline.name], "active": [True]}
    )
    probability = [s.probability for s in pipeline.stages] + [1.0, 0.0]
    tables["deal_pipeline_stage"] = pd.DataFrame(
        {
            "stage_id": STAGE_IDS,
            "pipeline_id": "default",
            "label": [*STOCK_STAGES, "Closed Won", "Closed Lost"],
            "probability": probability,
            "active": True,
            "display_order": range(len(STAGE_IDS)),
            # closed: Closed Won and Closed Lost alike, under either name
            "closed_won" if shape == "legacy" else "is_closed": [False] * 4 + [True, True],
        }
    )
    tables["company"] = pd.DataFrame(
        {
            "id": number(accounts.account_id),
            "is_deleted": False,
            "property_name": accounts.name,
            "property_industry": accounts.industry,
            "property_phone": accounts.phone,
            "property_website": accounts.website,
            "property_hubspot_owner_id": number(accounts.owner_id),
            "property_createdate": accounts.created_at,
            "property_hs_lastmodifieddate": accounts.updated_at,
        }
    )
    tables["deal"] = pd.DataFrame(
        {
            "deal_id": number(opps.opportunity_id),
            "is_deleted": opps.is_deleted,
            "deal_pipeline_id": "default",
            "deal_pipeline_stage_id": opps.stage.map(stage_id),
            "owner_id": number(opps.owner_id),
            "property_dealname": opps.name,
            "property_amount": opps.amount,
            "property_closedate": portal_midnight(opps.expected_close_date),
            "property_createdate": opps.created_at,
            "property_hs_lastmodifieddate": opps.updated_at,
            "property_closed_lost_reason": opps.lost_reason,
            "property_deal_currency_code": opps.currency,
            "property_lead_source": opps.lead_source,
        }
    )
    tables["deal_company"] = pd.DataFrame(
        {
            "deal_id": number(opps.opportunity_id),
            "company_id": number(opps.account_id),
            "type": "HUBSPOT_DEFINED",
        }
    )
    stays = history.sort_values(["opportunity_id", "changed_at"])
    entered = stays.changed_at.where(
        stays.from_stage.notna(),
        stays.opportunity_id.map(opps.set_index("opportunity_id").created_at),
    )
    ended = entered.groupby(stays.opportunity_id).shift(-1)
    tables["deal_stage"] = pd.DataFrame(
        {
            "deal_id": number(stays.opportunity_id),
            "_fivetran_start": entered,
            "value": stays.to_stage.map(stage_id),
            "date_entered": entered,
            "source": "CRM_UI",
            "_fivetran_end": ended.fillna(END_OF_TIME),
            "_fivetran_active": ended.isna(),
        }
    )
    # property history keeps every value a property took, the first at the deal's creation;
    # a date's value is its portal midnight in epoch milliseconds
    opp = opps.set_index("opportunity_id")
    as_epoch_ms = lambda days: (portal_midnight(days).astype("int64") // 10**3).astype(str)
    values = []
    for field, name, current, to_value in [
        ("amount", "amount", opp.amount.astype(str), lambda v: v),
        ("expected_close_date", "closedate", opp.expected_close_date, as_epoch_ms),
    ]:
        changes = fields[fields.field.eq(field) & fields.old_value.ne(fields.new_value)]
        initial = changes.groupby("opportunity_id").old_value.first().reindex(opp.index)
        values += [
            pd.DataFrame(
                {
                    "deal_id": number(opp.index.to_series()).values,
                    "name": name,
                    "timestamp": opp.created_at.values,
                    "value": to_value(initial.fillna(current)).values,
                }
            ),
            pd.DataFrame(
                {
                    "deal_id": number(changes.opportunity_id),
                    "name": name,
                    "timestamp": changes.changed_at,
                    "value": to_value(changes.new_value).values,
                }
            ),
        ]
    tables["deal_property_history"] = pd.concat(values, ignore_index=True).assign(source="CRM_UI")
    tables.update(_engagements(t["activities"], shape))
    tables = {name: _instants(frame) for name, frame in tables.items()}
    return Replica("hubspot", _metadata(shape), tables, _canonical(crm, pipeline))


def _engagements(activities: pd.DataFrame, shape: str) -> dict[str, pd.DataFrame]:
    """Engagements on deals, as a v1 (`legacy`) or v3 (`current`) connector writes them."""
    ids = number(activities.activity_id)
    kinds = activities.type.replace({"visit": "meeting"})
    tables = {
        "engagement_deal": pd.DataFrame(
            {"engagement_id": ids, "deal_id": number(activities.opportunity_id)}
        )
    }
    if shape == "legacy":
        tables["engagement"] = pd.DataFrame(
            {
                "id": ids,
                "type": kinds.str.upper(),
                "active": True,
                "owner_id": number(activities.owner_id),
                "timestamp": activities.occurred_at,
                "created_at": activities.occurred_at,
                "_fivetran_synced": activities.updated_at,
            }
        )
        return tables
    # v3: engagement keeps id and type only; owner, time and deletion are the typed tables'
    tables["engagement"] = pd.DataFrame({"id": ids, "type": kinds.str.upper()})
    for kind in ("call", "email", "meeting", "note"):
        mine = kinds.eq(kind)
        tables[f"engagement_{kind}"] = pd.DataFrame(
            {
                "engagement_id": ids[mine],
                "type": kind.upper(),
                "property_hs_createdate": activities.occurred_at[mine],
                "property_hs_timestamp": activities.occurred_at[mine],
                "property_hubspot_owner_id": number(activities.owner_id[mine]),
                "_fivetran_deleted": False,
                "_fivetran_synced": activities.updated_at[mine],
            }
        )
    # a call deleted in HubSpot after the deal's latest activity: it must not count
    latest = activities.loc[[activities.occurred_at.idxmax()]]
    deleted_id = ids.max() + 1
    tables["engagement_deal"] = pd.concat(
        [
            tables["engagement_deal"],
            pd.DataFrame({"engagement_id": deleted_id, "deal_id": number(latest.opportunity_id)}),
        ]
    )
    tables["engagement"].loc[len(tables["engagement"])] = [deleted_id, "CALL"]
    deleted = pd.DataFrame(
        {
            "engagement_id": deleted_id,
            "type": "CALL",
            "property_hs_timestamp": latest.occurred_at + pd.Timedelta(hours=1),
            "property_hubspot_owner_id": number(latest.owner_id),
            "_fivetran_deleted": True,
            "_fivetran_synced": latest.updated_at,
        }
    )
    tables["engagement_call"] = pd.concat([tables["engagement_call"], deleted])
    return tables


def _canonical(crm: SimulatedCRM, pipeline: Pipeline) -> dict:
    """The simulated CRM as the HubSpot adapter sees it: HubSpot's numeric ids; no managers,
    territories, targets, leads, competitors, account e-mails or tax ids, or leaving dates
    (an inactive owner left when last updated); a visit is a meeting; the deal's owner made
    each stage change (deal_stage names no user)."""
    t = {name: frame.copy() for name, frame in crm.tables.items()}
    users, opps, history = t["users"], t["opportunities"], t["stage_history"]
    users[["manager_id", "territory_id"]] = None
    users["left_at"] = users.updated_at.where(~users.is_active)
    t["teams"]["manager_id"] = None
    t["accounts"][["territory_id", "email", "tax_id"]] = None
    opps["competitor"] = None
    for name in ("territories", "targets", "leads"):
        t[name] = empty(name)
    first_stage_at_creation(history, opps)
    history["changed_by"] = history.opportunity_id.map(opps.set_index("opportunity_id").owner_id)
    closed_at_last_stage_change(history, opps)
    t["field_history"] = field_history_as_read(
        t["field_history"], history, pipeline, ["amount", "expected_close_date"]
    )
    t["activities"]["type"] = t["activities"].type.replace({"visit": "meeting"})
    for name, columns in {
        "users": ["user_id", "team_id"],
        "teams": ["team_id"],
        "accounts": ["account_id", "owner_id"],
        "opportunities": ["opportunity_id", "account_id", "owner_id"],
        "stage_history": ["opportunity_id", "changed_by"],
        "field_history": ["opportunity_id"],
        "activities": ["activity_id", "opportunity_id", "account_id", "owner_id"],
    }.items():
        for column in columns:
            t[name][column] = as_text(number(t[name][column]))
    return t
