"""mart_sales_metrics: the ratios a sales director reads every month (mart_win_loss is
sql/marts/mart_win_loss.sql).

Per period (week, month, quarter) and scope:
- lead_to_opportunity_rate: of leads created in the period, the share converted to a deal;
- lead_to_qualified_rate: of those leads, the share whose deal reached the qualified stage;
- opportunity_to_qualified_rate: of deals created in the period, the share that reached the
  qualified stage (any-stage: reaching a later stage counts);
- win_rate: of deals closed in the period, the share won;
- qualified_win_rate: the same among closed deals that reached the qualified stage;
- qualified_per_win: closed qualified deals per won qualified deal;
- sales_cycle_days: median days from creation to won, for deals won in the period;
- avg_won_amount: mean amount of deals won in the period.
Each row carries the numerator and denominator it was computed from.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from transforms.keys import is_in
from transforms.scopes import (
    SCOPES,
    local_time,
    per_scope,
    period_start,
    recent_period_starts,
    with_owner_scopes,
)

PERIODS = ("week", "month", "quarter")


def _in_recent_periods(
    moments: pd.Series, timezone: str, period_kind: str, count: int, as_of_date: pd.Timestamp
) -> tuple[pd.Series, pd.Series]:
    local = local_time(moments, timezone)
    start = period_start(local, period_kind)
    keep = (start >= recent_period_starts(as_of_date, period_kind, count)) & (
        local < as_of_date + pd.Timedelta(days=1)
    )
    return keep, start


def _by_period(
    frame: pd.DataFrame,
    moment: str,
    *,
    period_kind: str,
    count: int,
    timezone: str,
    as_of_date: pd.Timestamp,
    **aggregates: tuple,
) -> pd.DataFrame:
    """Aggregate the rows whose `moment` falls in each recent period, per scope."""
    keep, start = _in_recent_periods(frame[moment], timezone, period_kind, count, as_of_date)
    # only the columns aggregated and the scopes' ids: facts carry dozens more
    scoped = [c for c in SCOPES.values() if c is not None]
    used = list(dict.fromkeys([*scoped, *(column for column, _ in aggregates.values())]))
    out = per_scope(
        frame.loc[keep, used].assign(period_start=start[keep]),
        ["period_start"],
        lambda g: g.agg(**aggregates),
    )
    # nothing to aggregate (a CRM without leads, say) still gives the metric's columns
    return out.reindex(columns=list(dict.fromkeys([*out.columns, *aggregates])))


def _ratio(frame: pd.DataFrame, metric: str, numerator: str, denominator: str) -> pd.DataFrame:
    out = frame[["scope_kind", "scope_id", "period_start"]].copy()
    out["metric"] = metric
    out["numerator"] = frame[numerator].astype(float)
    out["denominator"] = frame[denominator].astype(float)
    out["value"] = (out.numerator / out.denominator).where(out.denominator > 0)
    return out


def sales_metrics(
    facts: pd.DataFrame,
    leads: pd.DataFrame,
    qualified_ids: pd.Index,
    users: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
    day_end: pd.Timestamp,
    timezone: str,
    periods: dict[str, int],
) -> pd.DataFrame:
    """`facts` is fct_opportunity; `qualified_ids` the deals that reached the qualified stage."""
    leads = with_owner_scopes(leads[leads.created_at < day_end], users)
    converted = leads.opportunity_id.notna() & leads.converted_at.lt(day_end)
    leads = leads.assign(
        converted=converted, qualified=converted & is_in(leads.opportunity_id, qualified_ids)
    )
    deals = facts[facts.created_at < day_end].assign(
        qualified=lambda f: is_in(f.opportunity_id, qualified_ids)
    )
    closed = deals[deals.closed_at.lt(day_end) & deals.status.isin(["won", "lost"])].assign(
        won=lambda f: f.status.eq("won"),
        qualified_won=lambda f: f.status.eq("won") & f.qualified,
        cycle_days=lambda f: (f.closed_at - f.created_at) / pd.Timedelta(days=1),
    )

    parts = []
    for period_kind in PERIODS:
        by_period = partial(
            _by_period,
            period_kind=period_kind,
            count=periods[period_kind],
            timezone=timezone,
            as_of_date=as_of_date,
        )
        by_lead = by_period(
            leads,
            "created_at",
            leads=("lead_id", "size"),
            converted=("converted", "sum"),
            qualified=("qualified", "sum"),
        )
        by_deal = by_period(
            deals, "created_at", created=("opportunity_id", "size"), qualified=("qualified", "sum")
        )
        by_close = by_period(
            closed,
            "closed_at",
            closed=("opportunity_id", "size"),
            won=("won", "sum"),
            qualified=("qualified", "sum"),
            qualified_won=("qualified_won", "sum"),
        )
        cycle = by_period(
            closed[closed.won],
            "closed_at",
            sales_cycle_days=("cycle_days", "median"),
            avg_won_amount=("amount", "mean"),
            won=("opportunity_id", "size"),
        )
        metrics = [
            _ratio(by_lead, "lead_to_opportunity_rate", "converted", "leads"),
            _ratio(by_lead, "lead_to_qualified_rate", "qualified", "leads"),
            _ratio(by_deal, "opportunity_to_qualified_rate", "qualified", "created"),
            _ratio(by_close, "win_rate", "won", "closed"),
            _ratio(by_close, "qualified_win_rate", "qualified_won", "qualified"),
            _ratio(by_close, "qualified_per_win", "qualified", "qualified_won"),
        ]
        for metric in ("sales_cycle_days", "avg_won_amount"):
            values = cycle[["scope_kind", "scope_id", "period_start"]].assign(
                metric=metric,
                value=cycle[metric],
                numerator=np.nan,
                denominator=cycle.won.astype(float),
            )
            metrics.append(values)
        parts.append(pd.concat(metrics, ignore_index=True).assign(period_kind=period_kind))
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "as_of_date", as_of_date)
    return out[
        [
            "as_of_date",
            "period_kind",
            "period_start",
            "scope_kind",
            "scope_id",
            "metric",
            "value",
            "numerator",
            "denominator",
        ]
    ]
