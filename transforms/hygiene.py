"""mart_hygiene: where the funnel is not telling the truth.

- skipped_stage: a deal recorded at an earlier stage that entered a stage beyond a required
  stage before ever recording it (never, or only afterwards);
- appeared_late: a deal won with no funnel history, first seen beyond the first required
  stage, or won within `quick_win_days` of its creation (hidden deals to question);
- regression: a deal that moved back to an earlier stage;
- duplicate_account: accounts that are one customer under name variants, or share a tax id,
  a phone number or a company e-mail / web domain (free-mail domains say nothing);
- collision: a duplicate group whose open deals are owned by two or more reps;
- past_close_date and missing_amount: open deals with a passed close date or no amount.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from transforms.keys import index_is_in
from transforms.opportunities import required_stage_skips
from transforms.scopes import local_date

FREE_MAIL_DOMAINS = frozenset(
    {
        "qq.com",
        "163.com",
        "126.com",
        "sina.com",
        "sina.cn",
        "sohu.com",
        "foxmail.com",
        "139.com",
        "yeah.net",
        "aliyun.com",
        "gmail.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "yahoo.com",
        "icloud.com",
        "me.com",
        "msn.com",
        "proton.me",
        "protonmail.com",
    }
)
_CHINA_IN_BRACKETS = r"[\(\[]\s*中国\s*[\)\]]"
_LEGAL_SUFFIX = (
    r"(?:\s|,|\.)*(?:股份有限公司|有限责任公司|集团有限公司|集团股份有限公司|有限公司|集团|公司"
    r"|\bco\.?,?\s*ltd\.?|\bco\.?|\bltd\.?|\blimited|\binc\.?|\bincorporated|\bllc"
    r"|\bgmbh|\bcorp\.?|\bcorporation|\bcompany)\s*$"
)
COLUMNS = ["as_of_date", "kind", "subject_id", "group_id", "owner_ids", "detail"]


def company_name_key(names: pd.Series) -> pd.Series:
    """A name with case, width, spacing, punctuation, (中国) and legal suffixes removed."""
    key = names.astype("str").str.normalize("NFKC").str.lower()
    key = key.str.replace(_CHINA_IN_BRACKETS, "", regex=True)
    for _ in range(3):  # "集团股份有限公司", "Co., Ltd. Inc." ...
        key = key.str.replace(_LEGAL_SUFFIX, "", regex=True)
    key = key.str.replace(r"[\W_]+", "", regex=True)
    return key.where(key.str.len() >= 2)


def _domain(values: pd.Series) -> pd.Series:
    host = values.astype("str").str.lower().str.strip()
    host = host.str.replace(r"^.*@", "", regex=True).str.replace(r"^[a-z]+://", "", regex=True)
    host = host.str.replace(r"^www\.", "", regex=True).str.replace(r"[/:].*$", "", regex=True)
    return host.where(host.str.contains(".", regex=False) & ~host.isin(FREE_MAIL_DOMAINS))


def account_match_keys(accounts: pd.DataFrame) -> pd.DataFrame:
    """By account_id, what two accounts of one customer share: the name's key, the
    tax id, the phone's last eight digits and the company domain. The same for every as-of
    day, so a backfill makes them once (text normalising is most of the grouping's cost)."""
    keys = {
        "name": company_name_key(accounts.name),
        "tax id": accounts.tax_id.astype("str").str.strip().str.upper().replace("", np.nan),
        # the last eight digits: the same line written with or without +86 and area code
        "phone": accounts.phone.astype("str")
        .str.replace(r"\D", "", regex=True)
        .where(lambda p: p.str.len() >= 8)
        .str[-8:],
        "domain": _domain(accounts.email).fillna(_domain(accounts.website)),
    }
    return pd.DataFrame(keys).set_axis(accounts.account_id.to_numpy())


def duplicate_account_groups(
    accounts: pd.DataFrame, keys: pd.DataFrame | None = None
) -> pd.DataFrame:
    """account_id, group_id, linked_by for every account that has a duplicate; `keys` are
    account_match_keys of these accounts, or of more."""
    keys = account_match_keys(accounts) if keys is None else keys.reindex(accounts.account_id)
    n = len(accounts)
    position = np.arange(n)
    links = []
    for reason, key in keys.items():
        frame = pd.DataFrame({"key": key.to_numpy(), "position": position}).dropna()
        first = frame.groupby("key").position.transform("min")
        pairs = frame[frame.position != first]
        links.append(pd.DataFrame({"a": first[pairs.index], "b": pairs.position, "reason": reason}))
    edges = pd.concat(links, ignore_index=True)
    graph = coo_matrix((np.ones(len(edges)), (edges.a, edges.b)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    groups = pd.DataFrame({"account_id": accounts.account_id.to_numpy(), "component": component})
    size = groups.groupby("component").account_id.transform("size")
    groups = groups[size > 1]
    groups["group_id"] = "DUP-" + groups.groupby("component").account_id.transform("min")
    reasons = (
        edges.assign(component=component[edges.a.to_numpy()])
        .groupby("component")
        .reason.agg(lambda r: ", ".join(sorted(set(r))))
    )
    groups["linked_by"] = groups.component.map(reasons)
    groups = groups.drop(columns="component").reset_index(drop=True)
    return groups.astype({"group_id": "str", "linked_by": "str"})


def _owner_lists(frame: pd.DataFrame, group: str) -> pd.Series:
    """Each `group`'s distinct owner ids, sorted and comma-joined ("" where it has none)."""
    pairs = frame[[group, "owner_id"]].dropna().drop_duplicates().sort_values([group, "owner_id"])
    joined = pairs.groupby(group).owner_id.agg(",".join)
    return joined.reindex(frame[group].unique(), fill_value="")


def hygiene(
    opportunities: pd.DataFrame,
    entries: pd.DataFrame,
    intervals: pd.DataFrame,
    accounts: pd.DataFrame,
    stages: pd.DataFrame,
    *,
    as_of_date: pd.Timestamp,
    day_end: pd.Timestamp,
    timezone: str,
    quick_win_days: int,
    account_keys: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`opportunities`: the deals as they were at the day's end (stage, status, amount,
    close date and owner then; transforms.build.as_of_view). `account_keys`:
    account_match_keys(accounts), when made beforehand."""
    opp = opportunities[opportunities.created_at < day_end].set_index("opportunity_id")
    known = entries[entries.entered_at < day_end].merge(
        stages[["pipeline", "stage", "stage_order", "is_won", "is_lost", "is_required"]]
    )
    in_funnel = known[~(known.is_won | known.is_lost)]
    first_order = in_funnel.groupby("opportunity_id").stage_order.min()
    won_by_then = opp.status.eq("won") & opp.closed_at.lt(day_end)
    rows = []

    # skipped_stage: required stages after the first recorded one, entered late or never
    required = stages[stages.is_required & ~(stages.is_won | stages.is_lost)]
    skips = required_stage_skips(entries[entries.entered_at < day_end], stages)
    skips = skips[skips.stage_order > skips.opportunity_id.map(first_order)]
    skips = skips.sort_values(["opportunity_id", "stage_order"])
    never, later = (
        part.groupby("opportunity_id").stage.agg("、".join)
        for part in (skips[~skips.recorded_later], skips[skips.recorded_later])
    )
    detail = pd.concat(
        ["never recorded at " + never, "recorded at " + later + " only after a later stage"]
    )
    detail = detail.groupby(level=0).agg("; ".join)
    rows.append(
        pd.DataFrame(
            {"kind": "skipped_stage", "subject_id": detail.index, "detail": detail.to_numpy()}
        )
    )

    # appeared_late
    won_ids = opp.index[won_by_then]
    no_history = won_ids[~index_is_in(won_ids, first_order.index)]
    first_required = required.groupby("pipeline").stage_order.min()
    late_limit = opp.pipeline.map(first_required).reindex(first_order.index).astype("float64")
    late = first_order[first_order > late_limit]
    late_stage = (
        in_funnel.sort_values("entered_at")
        .drop_duplicates("opportunity_id")
        .set_index("opportunity_id")
        .stage
    )
    days_to_win = (
        local_date(opp.closed_at, timezone) - local_date(opp.created_at, timezone)
    ).dt.days
    quick = opp.index[won_by_then & (days_to_win < quick_win_days)]
    reasons = pd.concat(
        [
            pd.Series("won with no funnel history", index=no_history),
            "first seen at " + late_stage.reindex(late.index),
            "won " + days_to_win[quick].astype(int).astype(str) + " days after creation",
        ]
    )
    reasons = reasons.groupby(level=0).agg("; ".join)
    rows.append(
        pd.DataFrame(
            {"kind": "appeared_late", "subject_id": reasons.index, "detail": reasons.to_numpy()}
        )
    )

    # regression
    back = intervals[(intervals.exit_kind == "regressed") & (intervals.exited_at < day_end)]
    back = (
        back.sort_values("exited_at")
        .groupby("opportunity_id")
        .agg(moves=("stage", "size"), last_from=("stage", "last"), last_to=("next_stage", "last"))
    )
    rows.append(
        pd.DataFrame(
            {
                "kind": "regression",
                "subject_id": back.index,
                "detail": back.last_from
                + " → "
                + back.last_to
                + (" (" + back.moves.astype(str) + " times)").where(back.moves > 1, ""),
            }
        )
    )

    # open deals as they stood that day
    open_deals = opp[opp.status.eq("open")].reset_index()
    passed = open_deals[open_deals.expected_close_date < as_of_date]
    rows.append(
        pd.DataFrame(
            {
                "kind": "past_close_date",
                "subject_id": passed.opportunity_id,
                "detail": "expected " + passed.expected_close_date.dt.strftime("%Y-%m-%d"),
            }
        )
    )
    no_amount = open_deals[open_deals.amount.isna() | (open_deals.amount <= 0)]
    rows.append(
        pd.DataFrame(
            {
                "kind": "missing_amount",
                "subject_id": no_amount.opportunity_id,
                "detail": "open deal without an amount",
            }
        )
    )

    deal_rows = pd.concat(rows, ignore_index=True)
    deal_rows["owner_ids"] = deal_rows.subject_id.map(opp.owner_id)
    deal_rows["group_id"] = None

    groups = duplicate_account_groups(
        accounts[accounts.created_at.isna() | (accounts.created_at < day_end)], account_keys
    )
    groups["owner_id"] = groups.account_id.map(accounts.set_index("account_id").owner_id)
    group_owners = _owner_lists(groups, "group_id")
    duplicates = pd.DataFrame(
        {
            "kind": "duplicate_account",
            "subject_id": groups.account_id,
            "group_id": groups.group_id,
            "owner_ids": groups.group_id.map(group_owners),
            "detail": "same " + groups.linked_by,
        }
    )

    deals_on_groups = open_deals.merge(groups[["account_id", "group_id"]])
    chasing = _owner_lists(deals_on_groups, "group_id")
    chasing = chasing[chasing.str.contains(",")]
    colliding = groups[groups.group_id.isin(chasing.index)]
    collisions = pd.DataFrame(
        {
            "kind": "collision",
            "subject_id": colliding.account_id,
            "group_id": colliding.group_id,
            "owner_ids": colliding.group_id.map(chasing),
            "detail": "open deals by " + colliding.group_id.map(chasing).str.replace(",", ", "),
        }
    )

    out = pd.concat([deal_rows, duplicates, collisions], ignore_index=True)
    out["as_of_date"] = as_of_date
    return out[COLUMNS]
