"""Salesforce as Fivetran replicates it into PostgreSQL (snake_case objects). Roles carry the
organisation: a team is a role with a forecast manager, its parent role the territory; reps
sit in a role of their own below their manager's (director > manager > rep).

Followed (fivetran/dbt_salesforce_source, read, not copied): `models/salesforce/
src_salesforce.yml` and `macros/get_*_columns.sql` (tables and columns; `_fivetran_deleted`,
`_fivetran_active`), `models/salesforce/stg_salesforce__opportunity.sql` (live rows: `where
coalesce(_fivetran_active, true)`, not deleted), `models/salesforce_history/` and CHANGELOG
(history mode: a version per change, `_fivetran_start`, `_fivetran_end`, `_fivetran_active`);
Salesforce's object reference for what the package does not stage: OpportunityStage
(ApiName, IsClosed, IsWon), Period (StartDate, EndDate, Type), ForecastingQuota.PeriodId,
Task.IsClosed, UserRole.ForecastUserId. Fivetran's PostgreSQL destination stores instants
as `timestamp with time zone`, dates as `date`.

Two modes, as connectors are set up:
- `standard`: one row per record; deleted ones stay, flagged `_fivetran_deleted`;
- `history`: every version of a record, the live one `_fivetran_active`.
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

# the simulator's stages as a stock Salesforce org names them (sql/sources/salesforce maps
# them back onto the example pipeline)
STOCK_STAGES = ["Prospecting", "Qualification", "Needs Analysis", "Negotiation/Review"]
WON, LOST = "Closed Won", "Closed Lost"
TOP_ROLE = "00E000000000001"
MODES = ("standard", "history")
END_OF_TIME = pd.Timestamp("9999-12-31 23:59:59", tz="UTC")
# the tables a history-mode replica keeps older versions of, in this replica
VERSIONED = ("user_role", "user", "account", "opportunity")


def _metadata(mode: str) -> sa.MetaData:
    m = sa.MetaData()
    history = mode == "history"
    ident = lambda name="id": sa.Column(name, sa.String(18), primary_key=True)
    ref = lambda name: sa.Column(name, sa.String(18))
    text = lambda name: sa.Column(name, sa.Text)
    ts = lambda name, **kw: sa.Column(name, sa.DateTime(timezone=True), **kw)
    flag = lambda name: sa.Column(name, sa.Boolean)
    synced = lambda: [
        ts("_fivetran_synced"),
        *(
            [ts("_fivetran_start", primary_key=True), ts("_fivetran_end"), flag("_fivetran_active")]
            if history
            else [flag("_fivetran_deleted")]
        ),
    ]
    modified = lambda: [
        ts("created_date"),
        ref("created_by_id"),
        ts("last_modified_date"),
        ts("system_modstamp"),
    ]
    sa.Table(
        "user_role",
        m,
        ident(),
        text("name"),
        ref("parent_role_id"),
        text("developer_name"),
        ref("forecast_user_id"),
        text("rollup_description"),
        ts("last_modified_date"),
        ts("system_modstamp"),
        *synced(),
    )
    sa.Table(
        "user",
        m,
        ident(),
        text("username"),
        text("first_name"),
        text("last_name"),
        text("name"),
        text("email"),
        ref("manager_id"),
        ref("user_role_id"),
        flag("is_active"),
        text("user_type"),
        text("state"),
        *modified(),
        *synced(),
    )
    sa.Table(
        "account",
        m,
        ident(),
        flag("is_deleted"),
        text("name"),
        text("type"),
        ref("parent_id"),
        text("billing_state"),
        text("billing_country"),
        text("phone"),
        text("website"),
        text("industry"),
        ref("owner_id"),
        *modified(),
        *synced(),
    )
    sa.Table(
        "opportunity",
        m,
        ident(),
        flag("is_deleted"),
        ref("account_id"),
        text("name"),
        text("stage_name"),
        sa.Column("amount", sa.Float),
        sa.Column("probability", sa.Float),
        sa.Column("close_date", sa.Date),
        text("type"),
        text("lead_source"),
        flag("is_closed"),
        flag("is_won"),
        text("forecast_category"),
        text("currency_iso_code"),
        ref("owner_id"),
        *modified(),
        *synced(),
    )
    sa.Table(
        "opportunity_history",
        m,
        ident(),
        ref("opportunity_id"),
        ref("created_by_id"),
        ts("created_date"),
        text("stage_name"),
        sa.Column("amount", sa.Float),
        sa.Column("expected_revenue", sa.Float),
        sa.Column("close_date", sa.Date),
        sa.Column("probability", sa.Float),
        text("forecast_category"),
        ts("system_modstamp"),
        flag("is_deleted"),
        *synced(),
    )
    sa.Table(
        "lead",
        m,
        ident(),
        flag("is_deleted"),
        text("last_name"),
        text("company"),
        text("status"),
        text("lead_source"),
        ref("owner_id"),
        flag("is_converted"),
        sa.Column("converted_date", sa.Date),
        ref("converted_account_id"),
        ref("converted_opportunity_id"),
        *modified(),
        *synced(),
    )
    sa.Table(
        "task",
        m,
        ident(),
        flag("is_deleted"),
        ref("what_id"),
        ref("account_id"),
        ref("owner_id"),
        text("subject"),
        sa.Column("activity_date", sa.Date),
        text("status"),
        flag("is_closed"),
        text("type"),
        text("task_subtype"),
        ts("completed_date_time"),
        *modified(),
        *synced(),
    )
    sa.Table(
        "event",
        m,
        ident(),
        flag("is_deleted"),
        ref("what_id"),
        ref("account_id"),
        ref("owner_id"),
        text("subject"),
        text("type"),
        text("event_subtype"),
        ts("activity_date_time"),
        ts("start_date_time"),
        *modified(),
        *synced(),
    )
    sa.Table(
        "forecasting_quota",
        m,
        ident(),
        ref("quota_owner_id"),
        sa.Column("start_date", sa.Date),
        sa.Column("quota_amount", sa.Float),
        ref("forecasting_type_id"),
        flag("is_quantity"),
        ref("period_id"),
        *modified(),
        *synced(),
    )
    sa.Table(
        "opportunity_stage",
        m,
        ident(),
        text("api_name"),
        text("master_label"),
        flag("is_active"),
        flag("is_closed"),
        flag("is_won"),
        sa.Column("default_probability", sa.Float),
        text("forecast_category_name"),
        sa.Column("sort_order", sa.Integer),
        *modified(),
        *synced(),
    )
    sa.Table(
        "period",
        m,
        ident(),
        text("type"),
        sa.Column("start_date", sa.Date),
        sa.Column("end_date", sa.Date),
        ref("fiscal_year_settings_id"),
        flag("is_forecast_period"),
        sa.Column("number", sa.Integer),
        ts("system_modstamp"),
        *synced(),
    )
    return m


DAYS = {"close_date", "activity_date", "converted_date", "start_date", "end_date"}


def _with_a_quarterly_quota(crm: SimulatedCRM) -> SimulatedCRM:
    """One rep whose org forecasts by quarter: the three monthly quotas of a quarter as one
    quota over the quarter's Period."""
    t = {name: frame.copy() for name, frame in crm.tables.items()}
    targets = t["targets"]
    quarter = targets.period_start.dt.to_period("Q")
    mine = targets.scope_kind.eq("user") & targets.scope_id.eq(targets.scope_id.iloc[0])
    whole = mine & quarter.eq(quarter[mine].min() + 1)
    assert whole.sum() == 3
    merged = (
        targets[whole]
        .iloc[:1]
        .assign(period_end=targets.period_end[whole].max(), amount=targets.amount[whole].sum())
    )
    t["targets"] = pd.concat([targets[~whole], merged], ignore_index=True)
    return SimulatedCRM(tables=t)


def replicate(crm: SimulatedCRM, pipeline: Pipeline, mode: str = "standard") -> Replica:
    assert mode in MODES
    crm = _with_a_quarterly_quota(crm)
    t = crm.tables
    users, teams, territories = t["users"], t["teams"], t["territories"]
    opps, history, fields = t["opportunities"], t["stage_history"], t["field_history"]
    stock = dict(zip(pipeline.open_stage_names, STOCK_STAGES, strict=True))
    stock |= {pipeline.won_stage: WON, pipeline.lost_stage: LOST}
    tables: dict[str, pd.DataFrame] = {}
    team_territory = users.drop_duplicates("team_id").set_index("team_id").territory_id
    rep_role = teams.team_id + "-REP"
    tables["user_role"] = pd.concat(
        [
            pd.DataFrame({"id": [TOP_ROLE], "name": ["销售总监"], "last_modified_date": [None]}),
            pd.DataFrame(
                {
                    "id": territories.territory_id,
                    "name": territories.name,
                    "parent_role_id": territories.parent_id.fillna(TOP_ROLE),
                    "last_modified_date": territories.updated_at,
                }
            ),
            pd.DataFrame(
                {
                    "id": teams.team_id,
                    "name": teams.name,
                    "parent_role_id": teams.team_id.map(team_territory),
                    "forecast_user_id": teams.manager_id,
                    "last_modified_date": teams.updated_at,
                }
            ),
            # the reps' roles, below their manager's, with no forecast manager of their own
            pd.DataFrame(
                {
                    "id": rep_role,
                    "name": teams.name + " 销售代表",
                    "parent_role_id": teams.team_id,
                    "last_modified_date": teams.updated_at,
                }
            ),
        ],
        ignore_index=True,
    ).assign(
        last_modified_date=lambda r: pd.to_datetime(r.last_modified_date).fillna(
            teams.updated_at.min()
        ),
        system_modstamp=lambda r: r.last_modified_date,
    )
    is_manager = users.user_id.isin(teams.manager_id)
    tables["user"] = pd.DataFrame(
        {
            "id": users.user_id,
            "username": users.email,
            "name": users.name,
            "last_name": users.name,
            "email": users.email,
            "manager_id": users.manager_id,
            "user_role_id": users.team_id.where(is_manager, users.team_id + "-REP").fillna(
                TOP_ROLE
            ),
            "is_active": users.is_active,
            "user_type": "Standard",
            "created_date": users.hired_at,
            "last_modified_date": users.updated_at,
            "system_modstamp": users.updated_at,
        }
    )
    accounts = t["accounts"]
    tables["account"] = pd.DataFrame(
        {
            "id": accounts.account_id,
            "is_deleted": False,
            "name": accounts.name,
            "phone": accounts.phone,
            "website": accounts.website,
            "industry": accounts.industry,
            "owner_id": accounts.owner_id,
            "created_date": accounts.created_at,
            "last_modified_date": accounts.updated_at,
            "system_modstamp": accounts.updated_at,
        }
    )
    closed = opps.status.ne("open")
    tables["opportunity"] = pd.DataFrame(
        {
            "id": opps.opportunity_id,
            "is_deleted": opps.is_deleted,
            "account_id": opps.account_id,
            "name": opps.name,
            "stage_name": opps.stage.map(stock),
            "amount": opps.amount,
            "close_date": opps.expected_close_date,
            "lead_source": opps.lead_source,
            "is_closed": closed,
            "is_won": opps.status.eq("won"),
            "currency_iso_code": opps.currency,
            "owner_id": opps.owner_id,
            "created_date": opps.created_at,
            "last_modified_date": opps.updated_at,
            "system_modstamp": opps.updated_at,
        }
    )
    tables["opportunity_history"] = _opportunity_history(opps, history, fields, stock)

    leads = t["leads"]
    converted = leads.status.eq("converted")
    tables["lead"] = pd.DataFrame(
        {
            "id": leads.lead_id,
            "is_deleted": False,
            "last_name": "线索",
            "company": "客户",
            "status": leads.status.map(
                {
                    "open": "Working - Contacted",
                    "disqualified": "Closed - Not Converted",
                    "converted": "Closed - Converted",
                }
            ),
            "lead_source": leads.source,
            "owner_id": leads.owner_id,
            "is_converted": converted,
            "converted_date": leads.converted_at.dt.normalize(),
            "converted_account_id": leads.account_id.where(converted),
            "converted_opportunity_id": leads.opportunity_id,
            "created_date": leads.created_at,
            "last_modified_date": leads.updated_at,
            "system_modstamp": leads.updated_at,
        }
    )
    activities = t["activities"]
    is_task = activities.type.isin(["call", "email", "note"])
    tasks, events = activities[is_task], activities[~is_task]
    tables["task"] = pd.DataFrame(
        {
            "id": tasks.activity_id,
            "is_deleted": False,
            "what_id": tasks.opportunity_id,
            "account_id": tasks.account_id,
            "owner_id": tasks.owner_id,
            "subject": "跟进",
            "activity_date": tasks.occurred_at.dt.normalize(),
            "status": "Completed",
            "is_closed": True,
            "type": tasks.type.map({"call": "Call", "email": "Email", "note": "Other"}),
            "task_subtype": tasks.type.map({"call": "Call", "email": "Email", "note": "Task"}),
            "completed_date_time": tasks.occurred_at,
            "created_date": tasks.occurred_at,
            "last_modified_date": tasks.updated_at,
            "system_modstamp": tasks.updated_at,
        }
    )
    tables["event"] = pd.DataFrame(
        {
            "id": events.activity_id,
            "is_deleted": False,
            "what_id": events.opportunity_id,
            "account_id": events.account_id,
            "owner_id": events.owner_id,
            "subject": "拜访",
            "type": events.type.map({"meeting": "Meeting", "visit": "Visit"}),
            "event_subtype": "Event",
            "activity_date_time": events.occurred_at,
            "start_date_time": events.occurred_at,
            "created_date": events.occurred_at,
            "last_modified_date": events.updated_at,
            "system_modstamp": events.updated_at,
        }
    )
    quotas = t["targets"][t["targets"].scope_kind.eq("user")]
    periods = quotas[["period_start", "period_end"]].drop_duplicates().reset_index(drop=True)
    periods["id"] = [f"0260{i:011d}" for i in range(len(periods))]
    span_days = (periods.period_end - periods.period_start).dt.days
    tables["period"] = pd.DataFrame(
        {
            "id": periods.id,
            "type": span_days.gt(31).map({True: "Quarter", False: "Month"}),
            "start_date": periods.period_start,
            "end_date": periods.period_end,
            "is_forecast_period": True,
        }
    )
    tables["forecasting_quota"] = pd.DataFrame(
        {
            "id": [f"0J9{i:012d}" for i in range(len(quotas))],
            "quota_owner_id": quotas.scope_id.values,
            "start_date": quotas.period_start.values,
            "quota_amount": quotas.amount.values,
            "is_quantity": False,
            "period_id": quotas.merge(periods, how="left").id.values,
        }
    )
    # every stage of the org, a closed one no deal sits in today among them
    stages = [*STOCK_STAGES, WON, LOST, "Closed - Duplicate"]
    tables["opportunity_stage"] = pd.DataFrame(
        {
            "id": [f"01J{i:012d}" for i in range(len(stages))],
            "api_name": stages,
            "master_label": stages,
            "is_active": True,
            "is_closed": [False] * len(STOCK_STAGES) + [True, True, True],
            "is_won": [False] * len(STOCK_STAGES) + [True, False, False],
            "default_probability": [s.probability * 100 for s in pipeline.stages] + [100, 0, 0],
            "sort_order": range(len(stages)),
        }
    )
    _plans_and_deletions(tables, mode)
    if mode == "history":
        _versions(tables)
    tables = {name: _instants(frame) for name, frame in tables.items()}
    return Replica("salesforce", _metadata(mode), tables, _canonical(crm, pipeline))


def _instants(frame: pd.DataFrame) -> pd.DataFrame:
    """Instants as Fivetran's PostgreSQL destination stores them: with time zone (days stay
    dates)."""
    times = [c for c in frame.select_dtypes("datetime64").columns if c not in DAYS]
    return frame.assign(**{c: frame[c].dt.tz_localize("UTC") for c in times})


def _plans_and_deletions(tables: dict[str, pd.DataFrame], mode: str) -> None:
    """What a live org holds besides the deals' own story: open tasks (plans, due later) on
    a few deals, and records deleted in Salesforce (flagged in standard mode, a last inactive
    version in history mode): none of them may count."""
    task, opportunity = tables["task"], tables["opportunity"]
    planned = task.drop_duplicates("what_id").head(20)
    plans = planned.assign(
        id=[f"00T9{i:011d}" for i in range(len(planned))],
        status="Not Started",
        is_closed=False,
        activity_date=planned.activity_date + pd.Timedelta(days=30),
        completed_date_time=pd.NaT,
    )
    latest = task.loc[[task.completed_date_time.idxmax()]]
    deleted_task = latest.assign(
        id="00T8000000000001",
        completed_date_time=latest.completed_date_time + pd.Timedelta(hours=1),
    )
    deleted_deal = opportunity.head(1).assign(id="0068000000000001", name="已删除的商机")
    # standard mode flags a deleted record; history mode closes its last version
    gone = {"_fivetran_deleted": True} if mode == "standard" else {"_fivetran_active": False}
    kept = {column: not value for column, value in gone.items()}
    tables["task"] = pd.concat(
        [task.assign(**kept), plans.assign(**kept), deleted_task.assign(**gone)],
        ignore_index=True,
    )
    tables["opportunity"] = pd.concat(
        [opportunity.assign(**kept), deleted_deal.assign(**gone)], ignore_index=True
    )


def _versions(tables: dict[str, pd.DataFrame]) -> None:
    """History mode: each record's live version from its last change on, an older version
    (another name) before it; records without `_fivetran_active` yet are live."""
    for name, frame in tables.items():
        changed = pd.to_datetime(frame.get("system_modstamp", pd.Series(pd.NaT, frame.index)))
        start = changed.fillna(pd.Timestamp("2020-01-01"))
        live = frame.assign(
            _fivetran_start=start,
            _fivetran_end=END_OF_TIME.tz_localize(None),
            _fivetran_active=frame.get("_fivetran_active", True),
        )
        if name not in VERSIONED:
            tables[name] = live
            continue
        older = frame.assign(
            name=frame.name + " (旧)",
            _fivetran_start=start - pd.Timedelta(days=30),
            _fivetran_end=start - pd.Timedelta(milliseconds=1),
            _fivetran_active=False,
        )
        tables[name] = pd.concat([live, older], ignore_index=True)


def _opportunity_history(
    opps: pd.DataFrame, history: pd.DataFrame, fields: pd.DataFrame, stock: dict[str, str]
) -> pd.DataFrame:
    """OpportunityHistory: a row with the stage, amount and close date after every change of
    any of them, the first at the deal's creation."""
    opp = opps.set_index("opportunity_id")
    events = []
    for field, column in [("amount", "amount"), ("expected_close_date", "close_date")]:
        changes = fields[fields.field.eq(field)]
        first_old = changes.groupby("opportunity_id").old_value.first()
        current = (
            opp.amount if field == "amount" else opp.expected_close_date.dt.strftime("%Y-%m-%d")
        )
        initial = first_old.reindex(opp.index).fillna(current.astype(object))
        events.append(
            pd.DataFrame(
                {
                    "opportunity_id": changes.opportunity_id,
                    "changed_at": changes.changed_at,
                    column: changes.new_value,
                }
            )
        )
        events.append(
            pd.DataFrame(
                {"opportunity_id": opp.index, "changed_at": opp.created_at, column: initial.values}
            )
        )
    stages = history.assign(
        changed_at=history.changed_at.where(
            history.from_stage.notna(), history.opportunity_id.map(opp.created_at)
        )
    )
    events.append(
        pd.DataFrame(
            {
                "opportunity_id": stages.opportunity_id,
                "changed_at": stages.changed_at,
                "stage_name": stages.to_stage.map(stock),
                "created_by_id": stages.changed_by,
            }
        )
    )
    rows = (
        pd.concat(events, ignore_index=True)
        .groupby(["opportunity_id", "changed_at"], as_index=False)
        .first()
        .sort_values(["opportunity_id", "changed_at"])
    )
    carried = rows.groupby("opportunity_id")[["stage_name", "amount", "close_date"]].ffill()
    rows[["stage_name", "amount", "close_date"]] = carried
    rows["created_by_id"] = rows.created_by_id.fillna(rows.opportunity_id.map(opp.owner_id))
    return pd.DataFrame(
        {
            "id": [f"008{i:012d}" for i in range(len(rows))],
            "opportunity_id": rows.opportunity_id.values,
            "created_by_id": rows.created_by_id.values,
            "created_date": rows.changed_at.values,
            "stage_name": rows.stage_name.values,
            "amount": rows.amount.astype(float).values,
            "close_date": pd.to_datetime(rows.close_date).values,
            "is_deleted": False,
            "system_modstamp": rows.changed_at.values,
        }
    )


def _canonical(crm: SimulatedCRM, pipeline: Pipeline) -> dict:
    """The simulated CRM as the Salesforce adapter sees it: no account e-mail, tax id or
    future leaving dates, lost reasons or competitors; user quotas only; leads convert on a
    day (ConvertedDate is a date) and unconverted leads name no account."""
    t = {name: frame.copy() for name, frame in crm.tables.items()}
    users, opps = t["users"], t["opportunities"]
    users["left_at"] = users.updated_at.where(~users.is_active)
    t["accounts"][["email", "tax_id"]] = None
    opps[["lost_reason", "competitor"]] = None
    first_stage_at_creation(t["stage_history"], opps)
    history = t["stage_history"]
    closed_at_last_stage_change(history, opps)
    t["field_history"] = field_history_as_read(
        t["field_history"], history, pipeline, ["amount", "expected_close_date"]
    )
    leads = t["leads"]
    leads["converted_at"] = leads.converted_at.dt.normalize()
    leads["account_id"] = leads.account_id.where(leads.status.eq("converted"))
    t["targets"] = t["targets"][t["targets"].scope_kind.eq("user")]
    return t | {"territories": t["territories"] if len(t["territories"]) else empty("territories")}
