"""The pure half of the data-quality gate: typed frames, the columns checks compare against,
and which rows must be held back together with a failing one.

Great Expectations runs on what `check_frame` returns (loudou/quality.py); nothing here
knows about GX.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from loudou.canonical import AMOUNT, BOOL, DATE, FLOAT, TABLES, TS, CanonicalTable, coerce
from transforms.keys import deal_time_order, is_in, positions

TYPED_KINDS = (TS, DATE, AMOUNT, FLOAT, BOOL)
# the tables whose rows are one unit with their opportunity: a deal and its history load,
# or wait in quarantine, together
OPPORTUNITY_CHILDREN = ("stage_history", "field_history")


def typed_frame(
    table: CanonicalTable, raw: pd.DataFrame, source_timezone: str
) -> tuple[pd.DataFrame, pd.Series]:
    """The canonical dtypes of the columns present, and per row the values that did not
    parse ("amount='abc'"; null when all did)."""
    present = CanonicalTable(
        table.name, table.key, {c: k for c, k in table.columns.items() if c in raw}
    )
    typed = coerce(present, raw, source_timezone)
    raw = raw.reset_index(drop=True)
    problems = pd.Series("", index=typed.index, dtype="str")
    for column, kind in present.columns.items():
        if kind not in TYPED_KINDS:
            continue
        unparsed = raw[column].notna() & typed[column].isna()
        if not unparsed.any():
            continue
        given = raw.loc[unparsed, column].astype("str")
        given = given[given.str.strip().ne("")]  # an empty string is a missing value
        separator = problems[given.index].ne("").map({True: ", ", False: ""})
        problems[given.index] += separator + column + "=" + given.map(repr)
    return typed, problems.mask(problems.eq(""))


def unresolved(values: pd.Series, known_keys: pd.Series) -> pd.Series:
    """The ids that name no known row (null where the id is null or resolves)."""
    return values.where(values.notna() & ~is_in(values, known_keys))


def previous_to_stage(history: pd.DataFrame) -> pd.Series:
    """The to_stage of each change's predecessor in its deal's history (by changed_at; a
    change without a time comes last, ties keep the history's order)."""
    deal = pd.factorize(history.opportunity_id)[0]
    order = deal_time_order(deal, history.changed_at)
    ordered_deal = deal[order]
    follows = np.r_[False, ordered_deal[1:] == ordered_deal[:-1]] & (ordered_deal >= 0)
    predecessor = np.empty(len(order), dtype="int64")
    predecessor[order] = np.where(follows, np.roll(order, 1), -1)
    stages = history.to_stage.array.take(predecessor, allow_fill=True)
    return pd.Series(stages, index=history.index, name="to_stage")


def earliest_allowed_at(
    history: pd.DataFrame, opportunities: pd.DataFrame, tolerance: pd.Timedelta
) -> pd.Series:
    """How early a deal's history may start: its creation, less the clock tolerance."""
    created = opportunities.drop_duplicates("opportunity_id")
    deal = positions(history.opportunity_id, created.opportunity_id)
    created_at = created.created_at.array.take(deal, allow_fill=True)
    return pd.Series(created_at, index=history.index) - tolerance


def failures(table: str, rows: pd.Index, reasons: Sequence[str] | str) -> pd.DataFrame:
    """Failing rows in the long form the gate collects: table, row (position), reason."""
    reason = reasons if isinstance(reasons, str) else list(reasons)
    return pd.DataFrame({"table": table, "row": rows.to_numpy(), "reason": reason})


def held_back(
    frames: dict[str, pd.DataFrame],
    failing: pd.DataFrame,
    references: dict[str, dict[str, str]],
    keys_in_warehouse: dict[str, pd.Series],
) -> pd.DataFrame:
    """Extend the failing rows to every row that cannot load without them.

    A deal and its history are one unit: a failing history row holds its deal back, and a
    held deal holds its whole history back, so the warehouse keeps the deal's last good
    version. A row whose reference names a row held back this run (and not already in the
    warehouse) waits too. Repeats until nothing more is held.
    """
    found = [failing]
    held = {name: pd.Index(failing.row[failing.table.eq(name)].unique()) for name in frames}

    def hold(
        name: str, mask: pd.Series, reason: str, ids: pd.Series | None = None, after: str = ""
    ) -> int:
        """Hold the rows of `name` where `mask` is true that are not held yet; the reason is
        `reason`, or `reason` + the row's id + `after` (texts built for those rows only)."""
        rows = frames[name].index[mask.to_numpy()].difference(held[name])
        if len(rows):
            held[name] = held[name].union(rows)
            text = reason if ids is None else reason + ids.loc[rows] + after
            found.append(failures(name, rows, text))
        return len(rows)

    deals = frames["opportunities"].opportunity_id
    while True:
        added = 0
        for child in OPPORTUNITY_CHILDREN:
            failing_ids = frames[child].opportunity_id.loc[held[child]]
            added += hold("opportunities", is_in(deals, failing_ids), f"{child} rows quarantined")
        for child in OPPORTUNITY_CHILDREN:
            ids = frames[child].opportunity_id
            held_deals = deals.loc[held["opportunities"]]
            added += hold(child, is_in(ids, held_deals), "its opportunity ", ids, " is quarantined")
        for name, columns in references.items():
            for column, target in columns.items():
                waiting = frames[target][TABLES[target].key[0]].loc[held[target]]
                waiting = waiting[~is_in(waiting, keys_in_warehouse.get(target, []))]
                if waiting.empty or column not in frames[name]:
                    continue
                ids = frames[name][column]
                added += hold(
                    name, is_in(ids, waiting), f"{column} ", ids, f" is quarantined in {target}"
                )
        if not added:
            return pd.concat(found, ignore_index=True)


def stages_no_longer_configured(
    opportunities: pd.DataFrame, stage_history: pd.DataFrame, stages: pd.DataFrame
) -> list[str]:
    """Stages the warehouse's deals sit in, or passed through, that no configured pipeline
    names any more (a stage removed from loudou.yaml): each with how many deals and how much
    open amount it holds, most held first."""
    known = pd.Index(stages.stage.unique())
    sitting = opportunities[~opportunities.stage.isin(known) & opportunities.stage.notna()]
    passed = stage_history[~stage_history.to_stage.isin(known) & stage_history.to_stage.notna()]
    lines = []
    for stage in pd.concat([sitting.stage, passed.to_stage]).value_counts().index:
        deals = sitting[sitting.stage.eq(stage)]
        is_open = deals.status.eq("open")
        through = passed.opportunity_id[passed.to_stage.eq(stage)].nunique()
        lines.append(
            f"stage {stage!r} is no longer configured: {len(deals):,} deals sit in it "
            f"({int(is_open.sum()):,} open, {deals.amount[is_open].sum():,.0f} open amount) "
            f"and {through:,} passed through it"
        )
    return lines
