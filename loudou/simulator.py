"""A realistic CRM in the native schema, with planted cases and their ground truth.

Every deal walks the configured funnel with lognormal stays and stage-by-stage advance
probabilities (the *true* win probabilities, written to the truth file). On top of the
natural process it plants what later analyses must find: stages skipped, deals that appear
late in the funnel, duplicate accounts under name variants owned by different reps, stalled
deals, regressions, close-date pushes and amount changes. Open deals that are not planted as
stalled are kept clearly healthy, so the truth file is exact rather than a guess.

Everything is generated with vectorised numpy (scale 100 ≈ 1M opportunities).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loudou.canonical import TABLES, native_metadata
from loudou.config import Pipeline, Thresholds
from loudou.db import engine_for

DAY = np.timedelta64(86_400, "s")
HISTORY_DAYS = 540

_CITIES = ["北京", "上海", "深圳", "杭州", "成都", "武汉", "南京", "苏州", "广州", "西安"]
_CORE_CHARS = list("华瑞新泰达恒信科智联创远通明宏鼎盛博天海云腾安康和嘉佳丰中万金隆兴益汇源")
_INDUSTRIES = [
    ("科技", "Technology", "软件"),
    ("制造", "Manufacturing", "制造"),
    ("物流", "Logistics", "物流"),
    ("医药", "Pharma", "医药"),
    ("电子", "Electronics", "电子"),
    ("能源", "Energy", "能源"),
    ("贸易", "Trading", "零售"),
    ("软件", "Software", "软件"),
]
_ZH_SUFFIXES = ["有限公司", "股份有限公司", "集团有限公司"]
_SYLLABLES = [
    "ac",
    "be",
    "cor",
    "da",
    "el",
    "fi",
    "gra",
    "hel",
    "io",
    "jun",
    "ka",
    "lu",
    "mar",
    "no",
    "or",
    "pax",
    "qui",
    "ro",
    "sol",
    "tan",
    "ul",
    "ve",
    "wen",
    "xen",
    "yo",
    "zed",
    "nova",
    "tek",
    "lin",
    "vor",
]
_EN_SUFFIXES = ["Co., Ltd.", "Inc.", "LLC", "GmbH"]
_SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")
_GIVEN = list("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华")
_EN_FIRST = ["Alice", "Brian", "Chloe", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack"]
_EN_LAST = ["Smith", "Chen", "Brown", "Wang", "Miller", "Lee", "Davis", "Zhang", "Wilson", "Li"]
_LEAD_SOURCES = ["官网", "展会", "转介绍", "电话营销", "合作伙伴"]
_COMPETITORS = ["金蝶", "用友", "Salesforce", "SAP", None, None, None]
_LOST_REASONS = ["价格", "竞争对手", "预算取消", "无决策"]
_ACTIVITY_TYPES = np.array(["call", "visit", "email", "meeting", "note"])
_FREE_MAIL = ["qq.com", "163.com", "gmail.com"]


@dataclass
class SimulatedCRM:
    tables: dict[str, pd.DataFrame]
    truth: dict[str, Any] = field(default_factory=dict)


def _ids(prefix: str, n: int, start: int = 1) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.arange(start, start + n).astype(str), 7))


def _unique_digits(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    """n distinct numbers of `width` digits, as strings (i * prime mod 10^width is a bijection)."""
    offset = int(rng.integers(0, 10**width))
    return np.char.zfill(
        ((np.arange(n, dtype=np.int64) * 7_919 * 7_907 + offset) % 10**width).astype(str), width
    )


def _pick(rng: np.random.Generator, options: list, n: int) -> np.ndarray:
    return np.array(options, dtype=object)[rng.integers(0, len(options), n)]


def _company_names(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique company names (80% Chinese), their industry, and a unique brand token."""
    cores = len(_CORE_CHARS) ** 3
    codes = rng.choice(cores * len(_CITIES), size=n, replace=False)
    city, core = codes // cores, codes % cores
    base = len(_CORE_CHARS)
    chars = np.array(_CORE_CHARS)
    core_text = chars[core // base**2] + chars[(core // base) % base] + chars[core % base]
    industry = rng.integers(0, len(_INDUSTRIES), n)
    zh = (
        np.array(_CITIES)[city]
        + core_text
        + np.array([i[0] for i in _INDUSTRIES])[industry]
        + _pick(rng, _ZH_SUFFIXES, n).astype(str)
    )
    # the brand spells the unique code in base 30, so English names are unique too
    syl = np.array(_SYLLABLES)
    s = len(syl)
    brand = np.char.capitalize(
        syl[codes % s] + syl[(codes // s) % s] + syl[(codes // s**2) % s] + syl[(codes // s**3) % s]
    )
    en = (
        brand
        + " "
        + np.array([i[1] for i in _INDUSTRIES])[industry]
        + " "
        + _pick(rng, _EN_SUFFIXES, n).astype(str)
    )
    is_en = rng.random(n) < 0.2
    names = np.where(is_en, en, zh)
    token = np.char.add("c", codes.astype(str))
    return names, np.array([i[2] for i in _INDUSTRIES])[industry], token


def _name_variant(rng: np.random.Generator, name: str) -> str:
    """The same customer typed differently: suffix, (中国), width, spaces, case, punctuation."""
    if name.isascii():
        brand = name.split(" ")[0]
        rest = name[len(brand) :]
        options = [
            name.upper(),
            name.replace("Co., Ltd.", "Co Ltd").replace("Inc.", "Inc"),
            brand + rest.replace(",", "").replace(".", ""),
            "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in brand) + rest,
            brand.lower() + " " + rest.strip() + " ",
        ]
    else:
        stem = name
        for suffix in sorted(_ZH_SUFFIXES, key=len, reverse=True):
            if stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        options = [
            stem,
            stem + "股份有限公司",
            stem + "（中国）有限公司",
            stem + "(中国)有限公司",
            stem + "集团",
            " " + stem + " 有限公司",
        ]
    choice = options[rng.integers(0, len(options))]
    return choice if choice != name else choice + " "


def simulate(
    pipeline: Pipeline,
    *,
    scale: float = 1.0,
    seed: int = 7,
    now: datetime | None = None,
    thresholds: Thresholds | None = None,
    quick_win_days: int = 7,
) -> SimulatedCRM:
    """Generate a CRM as it stands at `now` (naive, the source's clock)."""
    rng = np.random.default_rng(seed)
    thresholds = thresholds or Thresholds()
    now64 = np.datetime64(pd.Timestamp(now or datetime(2026, 11, 20, 18, 0)).floor("s"), "s")
    stages = pipeline.open_stage_names
    k_stages = len(stages)
    true_advance = np.linspace(0.6, 0.8, k_stages)
    median_days = np.linspace(10, 30, k_stages)
    stall_limit = np.array(
        [s.stall_days or 3 * m for s, m in zip(pipeline.stages, median_days)], dtype=float
    )
    probability = np.array([s.probability for s in pipeline.stages])

    # --- organisation -----------------------------------------------------------------
    n_territories = max(2, round(4 * scale))
    n_teams = 2 * n_territories
    reps_per_team = 5
    territories = pd.DataFrame(
        {
            "territory_id": np.char.add(
                "R", np.char.zfill(np.arange(1, n_territories + 1).astype(str), 4)
            ),
            "name": [
                f"{['华东', '华南', '华北', '西部'][i % 4]}{i // 4 + 1}区"
                for i in range(n_territories)
            ],
            "parent_id": None,
        }
    )
    team_ids = np.char.add("T", np.char.zfill(np.arange(1, n_teams + 1).astype(str), 4))
    team_territory = territories.territory_id.to_numpy()[np.arange(n_teams) // 2]
    n_reps = n_teams * reps_per_team
    n_users = 1 + n_teams + n_reps
    user_ids = np.char.add("U", np.char.zfill(np.arange(1, n_users + 1).astype(str), 5))
    director, managers, reps = user_ids[0], user_ids[1 : 1 + n_teams], user_ids[1 + n_teams :]
    rep_team = np.repeat(np.arange(n_teams), reps_per_team)
    is_zh = rng.random(n_users) < 0.8
    user_names = np.where(
        is_zh,
        _pick(rng, _SURNAMES, n_users).astype(str)
        + _pick(rng, _GIVEN, n_users).astype(str)
        + np.where(rng.random(n_users) < 0.5, _pick(rng, _GIVEN, n_users).astype(str), ""),
        _pick(rng, _EN_FIRST, n_users).astype(str)
        + " "
        + _pick(rng, _EN_LAST, n_users).astype(str),
    )
    hired = now64 - (rng.uniform(HISTORY_DAYS + 30, 2000, n_users) * DAY).astype("timedelta64[s]")
    left = np.full(n_users, np.datetime64("NaT"), dtype="datetime64[s]")
    rep_left = rng.random(n_reps) < 0.08
    rep_leaving = ~rep_left & (rng.random(n_reps) < 0.03)
    left[1 + n_teams :][rep_left] = now64 - (rng.uniform(5, 120, rep_left.sum()) * DAY).astype(
        "timedelta64[s]"
    )
    left[1 + n_teams :][rep_leaving] = now64 + (rng.uniform(5, 30, rep_leaving.sum()) * DAY).astype(
        "timedelta64[s]"
    )
    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "name": user_names,
            "email": [f"{u.lower()}@loudou-demo.cn" for u in user_ids],
            "manager_id": np.concatenate(
                [[None], np.repeat(director, n_teams), managers[rep_team]]
            ),
            "team_id": np.concatenate([[None], team_ids, team_ids[rep_team]]),
            "territory_id": np.concatenate([[None], team_territory, team_territory[rep_team]]),
            "is_active": ~(left <= now64),
            "hired_at": hired,
            "left_at": left,
            "updated_at": np.maximum(hired, np.where(left <= now64, left, hired)),
        }
    )
    teams = pd.DataFrame(
        {
            "team_id": team_ids,
            "name": [f"销售{i + 1}组" for i in range(n_teams)],
            "manager_id": managers,
        }
    )
    rep_territory = team_territory[rep_team]

    # --- accounts (with planted duplicates under name variants) ------------------------
    n_accounts = round(3000 * scale)
    names, industry, token = _company_names(rng, n_accounts)
    account_ids = _ids("A", n_accounts)
    owner_idx = rng.integers(0, n_reps, n_accounts)
    free_mail = rng.random(n_accounts) < 0.1
    domain = np.where(
        free_mail, _pick(rng, _FREE_MAIL, n_accounts).astype(str), np.char.add(token, ".com.cn")
    )
    accounts = pd.DataFrame(
        {
            "account_id": account_ids,
            "name": names,
            "industry": industry,
            "territory_id": rep_territory[owner_idx],
            "owner_id": reps[owner_idx],
            "phone": np.char.add("+86 21 ", _unique_digits(rng, n_accounts, 8)),
            "email": np.char.add(np.where(free_mail, np.char.add(token, "@"), "info@"), domain),
            "website": np.where(free_mail, None, np.char.add("https://www.", domain)),
            "tax_id": np.char.add("9131", _unique_digits(rng, n_accounts, 14)),
            "created_at": now64
            - (rng.uniform(HISTORY_DAYS, 1500, n_accounts) * DAY).astype("timedelta64[s]"),
        }
    )

    # --- opportunities walk the funnel -------------------------------------------------
    n = round(10_000 * scale)
    opp_ids = _ids("O", n)
    account_idx = rng.integers(0, n_accounts, n)
    opp_owner_idx = owner_idx[account_idx].copy()
    created = now64 - (rng.uniform(1, HISTORY_DAYS, n) * DAY).astype("timedelta64[s]")
    stay_days = rng.lognormal(np.log(median_days), 0.5, size=(n, k_stages))
    stay_days = np.minimum(stay_days, 2.5 * median_days)  # natural stays end well before the limit
    planted_slow = rng.random(n) < 0.04
    stay_days[planted_slow, rng.integers(0, k_stages, planted_slow.sum())] *= 8
    advances = rng.random((n, k_stages)) < true_advance
    lost_at = np.where(advances.all(axis=1), -1, np.argmin(advances, axis=1))
    last_stage = np.where(lost_at < 0, k_stages - 1, lost_at)
    entered = (
        created[:, None]
        + np.concatenate([np.zeros((n, 1)), np.cumsum(stay_days, axis=1)[:, :-1]], axis=1) * DAY
    )
    entered = entered.astype("datetime64[s]")
    exit_at = entered + (stay_days * DAY).astype("timedelta64[s]")
    close_at = exit_at[np.arange(n), last_stage]
    closed = close_at <= now64
    stage_index = np.arange(k_stages)
    reached = (stage_index[None, :] <= last_stage[:, None]) & (entered <= now64)
    current = np.where(closed, last_stage, reached.sum(axis=1) - 1)

    # open deals are either clearly healthy or clearly over their stage limit
    age_days = (now64 - entered[np.arange(n), current]) / DAY
    limit = stall_limit[current]
    stalled_over = ~closed & (age_days > 1.2 * limit)
    shrink = ~closed & ~stalled_over & (age_days > 0.7 * limit)
    entered[np.arange(n)[shrink], current[shrink]] = now64 - (
        rng.uniform(0.1, 0.6, shrink.sum()) * limit[shrink] * DAY
    ).astype("timedelta64[s]")
    created = entered[:, 0]
    status = np.where(~closed, "open", np.where(lost_at < 0, "won", "lost"))

    # --- planted hidden deals -------------------------------------------------------------
    required = np.array([s.required for s in pipeline.stages])
    max_reached = np.where(status == "won", k_stages, current)
    skippable = [q for q in range(1, k_stages) if required[q]]
    skip_stage = np.full(n, -1)
    for q in skippable:
        candidates = (max_reached > q) & (skip_stage < 0) & ~planted_slow
        skip_stage[candidates & (rng.random(n) < 0.03)] = q
    late_kind = np.zeros(n, dtype=int)  # 1 = won with no funnel history, 2 = first seen late
    won_candidates = (status == "won") & (skip_stage < 0) & ~planted_slow
    won_candidates &= created <= now64 - quick_win_days * DAY
    late_kind[won_candidates & (rng.random(n) < 0.03)] = 1
    late_kind[won_candidates & (late_kind == 0) & (rng.random(n) < 0.03)] = 2
    quick = late_kind == 1
    close_at[quick] = created[quick] + (
        rng.uniform(0, quick_win_days - 1, quick.sum()) * DAY
    ).astype("timedelta64[s]")

    # --- stage history (long form) --------------------------------------------------------
    row_opp, row_stage = np.nonzero(stage_index[None, :] <= current[:, None])
    visit = pd.DataFrame({"opp": row_opp, "k": row_stage, "ts": entered[row_opp, row_stage]})
    visit = visit[late_kind[visit.opp] != 1]
    visit = visit[~((late_kind[visit.opp] == 2) & (visit.k < k_stages - 1))]
    visit.loc[(late_kind[visit.opp] == 2).astype(bool), "ts"] = created[
        visit.opp[late_kind[visit.opp] == 2]
    ]
    visit = visit[skip_stage[visit.opp] != visit.k]
    terminal = pd.DataFrame({"opp": np.nonzero(closed | quick)[0]})
    terminal["k"] = np.where(status[terminal.opp] == "won", k_stages, k_stages + 1)
    terminal["ts"] = close_at[terminal.opp]

    # regressions: inside a finished stay at stage r, back to r-1 and forward again
    regress = (rng.random(n) < 0.05) & (late_kind == 0) & (skip_stage < 0) & (max_reached >= 2)
    # only inside a stay that has ended, so the deal's current state is untouched
    r_stage = rng.integers(1, np.maximum(2, max_reached))
    r_opp = np.nonzero(regress)[0]
    r_k = r_stage[r_opp]
    r_start, r_stay = entered[r_opp, r_k], stay_days[r_opp, r_k] * DAY
    back = pd.DataFrame(
        {"opp": r_opp, "k": r_k - 1, "ts": r_start + (0.3 * r_stay).astype("timedelta64[s]")}
    )
    again = pd.DataFrame(
        {"opp": r_opp, "k": r_k, "ts": r_start + (0.6 * r_stay).astype("timedelta64[s]")}
    )

    history = pd.concat([visit, back, again, terminal], ignore_index=True)
    history = history.sort_values(["opp", "ts", "k"], kind="stable").reset_index(drop=True)
    stage_names = np.array([*stages, pipeline.won_stage, pipeline.lost_stage], dtype=object)
    history["to_stage"] = stage_names[history.k]
    previous = history.groupby("opp").to_stage.shift(1)
    history["from_stage"] = previous.where(previous.notna(), None)

    # --- current state, close dates, amounts ------------------------------------------------
    last_change = history.groupby("opp").ts.max().reindex(range(n)).to_numpy()
    current_stage = history.groupby("opp").to_stage.last().reindex(range(n)).to_numpy()
    closed_at = np.where(status != "open", close_at, np.datetime64("NaT"))
    open_mask = status == "open"
    stalled_reasons: dict[int, list[str]] = {}

    pushes = np.where(
        open_mask, rng.integers(0, thresholds.close_date_pushes, n), rng.integers(0, 2, n)
    )
    plant_pushed = open_mask & ~stalled_over & (rng.random(n) < 0.03)
    plant_past = open_mask & ~stalled_over & ~plant_pushed & (rng.random(n) < 0.03)
    pushes[plant_pushed] = thresholds.close_date_pushes + rng.integers(0, 2, plant_pushed.sum())
    expected_close = np.where(
        open_mask,
        now64 + (rng.uniform(10, 120, n) * DAY).astype("timedelta64[s]"),
        np.where(np.isnat(closed_at), now64, closed_at)
        + (rng.uniform(-10, 5, n) * DAY).astype("timedelta64[s]"),
    )
    expected_close[plant_past] = now64 - (rng.uniform(3, 40, plant_past.sum()) * DAY).astype(
        "timedelta64[s]"
    )
    stalled_past = stalled_over & (rng.random(n) < 0.5)
    expected_close[stalled_past] = now64 - (rng.uniform(3, 40, stalled_past.sum()) * DAY).astype(
        "timedelta64[s]"
    )
    expected_close = expected_close.astype("datetime64[D]")

    amount = np.round(rng.lognormal(np.log(80_000), 0.8, n), -2)
    missing_amount = open_mask & (rng.random(n) < 0.01)

    # close-date pushes and amount changes, in field history
    push_opp = np.repeat(np.arange(n), pushes)
    push_seq = np.arange(push_opp.size) - np.repeat(np.cumsum(pushes) - pushes, pushes)
    push_delta = rng.integers(14, 46, push_opp.size)
    by_deal = pd.Series(push_delta).groupby(push_opp)
    later_pushes = (by_deal.transform("sum") - by_deal.cumsum() + push_delta).to_numpy()
    new_date = expected_close[push_opp] - (later_pushes - push_delta).astype("timedelta64[D]")
    old_date = new_date - push_delta.astype("timedelta64[D]")
    span_end = np.where(open_mask, now64 - DAY, np.where(np.isnat(closed_at), now64, closed_at))
    push_window = (span_end - created)[push_opp] / DAY
    push_at = created[push_opp] + (
        (push_seq + rng.uniform(0.2, 0.8, push_opp.size))
        / np.maximum(pushes[push_opp], 1)
        * push_window
        * DAY
    ).astype("timedelta64[s]")
    changes = (rng.random(n) < 0.25) & ~missing_amount
    ch_opp = np.nonzero(changes)[0]
    old_amount = np.round(amount[ch_opp] * rng.uniform(0.6, 1.4, ch_opp.size), -2)
    ch_at = created[ch_opp] + (
        rng.uniform(0.1, 0.9, ch_opp.size) * (span_end - created)[ch_opp] / DAY * DAY
    ).astype("timedelta64[s]")
    status_opp = np.nonzero(status != "open")[0]
    field_history = pd.concat(
        [
            pd.DataFrame(
                {
                    "opportunity_id": opp_ids[push_opp],
                    "field": "expected_close_date",
                    "changed_at": push_at,
                    "old_value": old_date.astype(str),
                    "new_value": new_date.astype(str),
                }
            ),
            pd.DataFrame(
                {
                    "opportunity_id": opp_ids[ch_opp],
                    "field": "amount",
                    "changed_at": ch_at,
                    "old_value": old_amount.astype(str),
                    "new_value": amount[ch_opp].astype(str),
                }
            ),
            pd.DataFrame(
                {
                    "opportunity_id": opp_ids[status_opp],
                    "field": "status",
                    "changed_at": close_at[status_opp],
                    "old_value": "open",
                    "new_value": status[status_opp],
                }
            ),
        ],
        ignore_index=True,
    ).drop_duplicates(["opportunity_id", "field", "changed_at"])
    last_field_change = (
        pd.Series(field_history.changed_at.to_numpy())
        .groupby(pd.Series(field_history.opportunity_id.to_numpy()))
        .max()
    )

    # --- activities: healthy open deals were touched recently, stalled ones not -------------
    life_end = np.where(open_mask, now64, close_at)
    quiet_since = now64 - ((thresholds.no_activity_days + 5) * DAY)
    life_end = np.where(stalled_over, np.minimum(life_end, quiet_since), life_end)
    life_days = np.maximum((life_end - created) / DAY, 0)
    n_acts = np.where(life_days > 0, 1 + rng.poisson(life_days / 10), 0).clip(0, 30)
    act_opp = np.repeat(np.arange(n), n_acts)
    act_at = created[act_opp] + (rng.random(act_opp.size) * life_days[act_opp] * DAY).astype(
        "timedelta64[s]"
    )
    recent = open_mask & ~stalled_over
    recent_opp = np.nonzero(recent)[0]
    recent_at = now64 - (
        rng.uniform(0.1, thresholds.no_activity_days / 2, recent_opp.size) * DAY
    ).astype("timedelta64[s]")
    act_opp = np.concatenate([act_opp, recent_opp])
    act_at = np.concatenate([act_at, np.maximum(recent_at, created[recent_opp])])

    # --- reps who left keep some open deals (hand-overs); the others were reassigned ------
    rep_left_at = left[1 + n_teams :]
    owner_gone = (rep_left_at[opp_owner_idx] <= now64) & ~(open_mask & (rng.random(n) < 0.7))
    same_team_rep = rep_team[opp_owner_idx] * reps_per_team + (
        (opp_owner_idx % reps_per_team + 1 + rng.integers(0, reps_per_team - 1, n)) % reps_per_team
    )
    opp_owner_idx = np.where(owner_gone, same_team_rep, opp_owner_idx)

    # --- planted duplicate accounts: another rep of the territory chases the same customer --
    n_dup = max(2, round(0.02 * n_accounts))
    dup_of = rng.choice(n_accounts, n_dup, replace=False)
    dup_ids = _ids("A", n_dup, start=n_accounts + 1)
    dup_owner = (owner_idx[dup_of] // reps_per_team) * reps_per_team + (
        (owner_idx[dup_of] % reps_per_team + 1 + rng.integers(0, reps_per_team - 1, n_dup))
        % reps_per_team
    )
    shared = rng.integers(0, 4, n_dup)  # 0 name only, 1 tax id, 2 phone, 3 e-mail domain
    original = accounts.iloc[dup_of].reset_index(drop=True)
    dup_accounts = pd.DataFrame(
        {
            "account_id": dup_ids,
            "name": [_name_variant(rng, name) for name in original.name],
            "industry": original.industry,
            "territory_id": original.territory_id,
            "owner_id": reps[dup_owner],
            "phone": np.where(
                shared == 2, original.phone, np.char.add("+86 10 ", _unique_digits(rng, n_dup, 8))
            ),
            "email": np.where(
                shared == 3, np.char.add("sales@", original.email.str.split("@").str[1]), None
            ),
            "website": None,
            "tax_id": np.where(shared == 1, original.tax_id, None),
            "created_at": now64
            - (rng.uniform(10, HISTORY_DAYS, n_dup) * DAY).astype("timedelta64[s]"),
        }
    )
    # free-mail domains say nothing about the customer: fall back to the tax id
    free_dup = (shared == 3) & original.email.str.contains("|".join(_FREE_MAIL)).to_numpy()
    dup_accounts.loc[free_dup, "email"] = None
    dup_accounts.loc[free_dup, "tax_id"] = original.tax_id[free_dup]
    # most groups are live collisions: an open deal on each side, owned by different reps
    movable = open_mask & (late_kind == 0) & (skip_stage < 0)
    pool = pd.DataFrame({"deal": rng.permutation(np.nonzero(movable)[0])})
    pool["territory"] = rep_territory[opp_owner_idx[pool.deal]]
    pool["slot"] = pool.groupby("territory").cumcount()
    groups = pd.DataFrame(
        {"group": np.arange(n_dup), "territory": rep_territory[owner_idx[dup_of]]}
    )
    groups["slot"] = groups.groupby("territory").cumcount() * 2
    live = rng.random(n_dup) < 0.7
    for side, offset in (("duplicate", 0), ("original", 1)):
        chosen = (
            groups[live].assign(slot=groups.slot + offset).merge(pool, on=["territory", "slot"])
        )
        target_account = np.where(
            side == "duplicate", n_accounts + chosen.group, dup_of[chosen.group]
        )
        target_owner = np.where(
            side == "duplicate", dup_owner[chosen.group], owner_idx[dup_of[chosen.group]]
        )
        account_idx[chosen.deal] = target_account
        opp_owner_idx[chosen.deal] = target_owner
    all_accounts = pd.concat([accounts, dup_accounts], ignore_index=True)
    all_accounts["updated_at"] = all_accounts.created_at

    # --- opportunities frame -----------------------------------------------------------
    # a CRM stamps updated_at on every change of the deal or its fields
    updated = (
        pd.DataFrame(
            {
                "created": created,
                "stage": last_change,
                "field": pd.Series(opp_ids).map(last_field_change).to_numpy(),
            }
        )
        .max(axis=1)
        .to_numpy(dtype="datetime64[s]")
    )
    opportunities = pd.DataFrame(
        {
            "opportunity_id": opp_ids,
            "name": np.char.add(
                all_accounts.name.to_numpy(dtype=str)[account_idx],
                np.char.add(" 项目 ", np.arange(1, n + 1).astype(str)),
            ),
            "account_id": all_accounts.account_id.to_numpy()[account_idx],
            "owner_id": reps[opp_owner_idx],
            "pipeline": pipeline.name,
            "stage": current_stage,
            "status": status,
            "amount": np.where(missing_amount, np.nan, amount),
            "currency": "CNY",
            "expected_close_date": expected_close,
            "created_at": created,
            "updated_at": updated,
            "closed_at": np.where(status != "open", close_at, np.datetime64("NaT")),
            "lost_reason": np.where(status == "lost", _pick(rng, _LOST_REASONS, n), None),
            "competitor": _pick(rng, _COMPETITORS, n),
            "lead_source": _pick(rng, _LEAD_SOURCES, n),
            "is_deleted": False,
        }
    )
    stage_history = pd.DataFrame(
        {
            "opportunity_id": opp_ids[history.opp],
            "changed_at": history.ts.to_numpy(),
            "to_stage": history.to_stage,
            "from_stage": history.from_stage,
            "changed_by": opportunities.owner_id.to_numpy()[history.opp],
        }
    )
    activities = pd.DataFrame(
        {
            "activity_id": _ids("X", act_opp.size),
            "opportunity_id": opp_ids[act_opp],
            "account_id": opportunities.account_id.to_numpy()[act_opp],
            "owner_id": opportunities.owner_id.to_numpy()[act_opp],
            "type": _ACTIVITY_TYPES[rng.integers(0, len(_ACTIVITY_TYPES), act_opp.size)],
            "occurred_at": act_at,
            "updated_at": act_at,
        }
    )

    # --- leads --------------------------------------------------------------------------
    converted = np.nonzero(rng.random(n) < 0.8)[0]
    n_other = round(0.7 * n)
    lead_created = np.concatenate(
        [
            created[converted]
            - (rng.uniform(1, 30, converted.size) * DAY).astype("timedelta64[s]"),
            now64 - (rng.uniform(1, HISTORY_DAYS, n_other) * DAY).astype("timedelta64[s]"),
        ]
    )
    lead_status = np.concatenate(
        [
            np.full(converted.size, "converted"),
            np.where(rng.random(n_other) < 0.6, "disqualified", "open"),
        ]
    )
    leads = pd.DataFrame(
        {
            "lead_id": _ids("L", converted.size + n_other),
            "source": np.concatenate(
                [
                    opportunities.lead_source.to_numpy()[converted],
                    _pick(rng, _LEAD_SOURCES, n_other),
                ]
            ),
            "owner_id": np.concatenate(
                [
                    opportunities.owner_id.to_numpy()[converted],
                    reps[rng.integers(0, n_reps, n_other)],
                ]
            ),
            "account_id": np.concatenate(
                [opportunities.account_id.to_numpy()[converted], np.full(n_other, None)]
            ),
            "status": lead_status,
            "created_at": lead_created,
            "converted_at": np.concatenate(
                [created[converted], np.full(n_other, np.datetime64("NaT"), "datetime64[s]")]
            ),
            "opportunity_id": np.concatenate([opp_ids[converted], np.full(n_other, None)]),
        }
    )
    leads["updated_at"] = leads.converted_at.fillna(leads.created_at)

    # --- monthly targets per rep and team, near what reps actually win ------------------
    months = pd.date_range(
        pd.Timestamp(now64).to_period("M").to_timestamp() - pd.DateOffset(months=18),
        periods=22,
        freq="MS",
    )
    won_per_rep_month = amount[status == "won"].sum() / n_reps / (HISTORY_DAYS / 30.4)
    rep_quota = np.round(won_per_rep_month * rng.uniform(1.0, 1.3, n_reps), -3)
    rep_targets = pd.DataFrame(
        {
            "scope_kind": "user",
            "scope_id": np.tile(reps, len(months)),
            "period_start": np.repeat(months.to_numpy(), n_reps),
            "amount": np.tile(rep_quota, len(months)),
        }
    )
    rep_targets["team"] = np.tile(team_ids[rep_team], len(months))
    team_targets = (
        rep_targets.groupby(["team", "period_start"], as_index=False)
        .amount.sum()
        .rename(columns={"team": "scope_id"})
        .assign(scope_kind="team")
    )
    targets = pd.concat([rep_targets.drop(columns="team"), team_targets], ignore_index=True)
    targets["period_end"] = (targets.period_start + pd.offsets.MonthEnd(0)).dt.normalize()

    # --- ground truth -------------------------------------------------------------------
    for i in np.nonzero(stalled_over)[0]:
        stalled_reasons[i] = ["over_stage_limit", "no_activity"] + (
            ["past_close_date"] if stalled_past[i] else []
        )
    for i in np.nonzero(plant_past)[0]:
        stalled_reasons[i] = ["past_close_date"]
    for i in np.nonzero(plant_pushed)[0]:
        stalled_reasons[i] = ["pushed_repeatedly"]
    dup_groups = [[all_accounts.account_id.iat[a], dup_ids[i]] for i, a in enumerate(dup_of)]
    open_owners = opportunities[open_mask].groupby("account_id").owner_id.agg(set)
    collisions = [
        g for g in dup_groups if len(set().union(*(open_owners.get(a, set()) for a in g))) >= 2
    ]
    win_from_stage = np.cumprod(true_advance[::-1])[::-1]
    truth = {
        "now": str(pd.Timestamp(now64)),
        "scale": scale,
        "seed": seed,
        "true_win_probability": dict(zip(stages, np.round(win_from_stage, 6).tolist())),
        "configured_probability": dict(zip(stages, probability.tolist())),
        "stall_limit_days": dict(zip(stages, stall_limit.tolist())),
        "skipped_stage": {
            opp_ids[i]: stages[skip_stage[i]] for i in np.nonzero(skip_stage >= 0)[0]
        },
        "appeared_late": {
            opp_ids[i]: ("won_without_history" if late_kind[i] == 1 else "first_seen_late")
            for i in np.nonzero(late_kind)[0]
        },
        "regression": sorted(opp_ids[regress].tolist()),
        "duplicate_account": dup_groups,
        "collision": collisions,
        "stalled": {opp_ids[i]: reasons for i, reasons in sorted(stalled_reasons.items())},
        "missing_amount": sorted(opp_ids[missing_amount].tolist()),
        "departed_reps": sorted(reps[rep_left | rep_leaving].tolist()),
    }
    tables = {
        "territories": territories.assign(updated_at=now64 - 400 * DAY),
        "teams": teams.assign(updated_at=now64 - 400 * DAY),
        "users": users,
        "accounts": all_accounts,
        "leads": leads,
        "opportunities": opportunities,
        "stage_history": stage_history,
        "field_history": field_history,
        "activities": activities,
        "targets": targets[["scope_kind", "scope_id", "period_start", "period_end", "amount"]],
    }
    return SimulatedCRM(tables=tables, truth=truth)


def write_truth(crm: SimulatedCRM, path: Path) -> None:
    path.write_text(json.dumps(crm.truth, ensure_ascii=False, indent=1), encoding="utf-8")


def write_crm(crm: SimulatedCRM, url: str) -> dict[str, int]:
    """Create the native schema at `url` (replacing it) and bulk-write the CRM."""
    metadata = native_metadata()
    engine = engine_for(url)
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        counts = {}
        for name, frame in crm.tables.items():
            table = metadata.tables[TABLES[name].native_name]
            frame = frame[list(table.c.keys())]
            if engine.dialect.name == "postgresql":
                _copy_into_postgres(engine, table.name, frame)
            else:
                _insert_rows(engine, table, frame)
            counts[name] = len(frame)
        return counts
    finally:
        engine.dispose()


def _python_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain Python values (None for missing), as DBAPI drivers want them."""
    columns = {}
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_datetime64_any_dtype(values):
            column = values.dt.to_pydatetime() if name not in _DATE_COLUMNS else values.dt.date
            column = np.where(values.isna(), None, np.asarray(column, dtype=object))
        else:
            column = values.astype(object).where(values.notna(), None).to_numpy()
        columns[name] = column
    return [dict(zip(columns, row)) for row in zip(*columns.values())]


_DATE_COLUMNS = {"expected_close_date", "period_start", "period_end"}


def _insert_rows(engine: Any, table: Any, frame: pd.DataFrame, chunk: int = 20_000) -> None:
    with engine.begin() as connection:
        for start in range(0, len(frame), chunk):
            connection.execute(table.insert(), _python_rows(frame.iloc[start : start + chunk]))


def _copy_into_postgres(engine: Any, table: str, frame: pd.DataFrame) -> None:
    """COPY is an order of magnitude faster than INSERT for the benchmark's millions of rows."""
    columns = ", ".join(frame.columns)
    raw = engine.raw_connection()
    try:
        with (
            raw.cursor() as cursor,
            cursor.copy(
                f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')"
            ) as copy,
        ):
            for start in range(0, len(frame), 200_000):
                part = frame.iloc[start : start + 200_000]
                copy.write(
                    part.to_csv(
                        index=False, header=False, na_rep="\\N", date_format="%Y-%m-%d %H:%M:%S"
                    )
                )
        raw.commit()
    finally:
        raw.close()
