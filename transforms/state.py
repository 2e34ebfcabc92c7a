"""Merge a night's changes into the canonical state the warehouse keeps."""

from __future__ import annotations

import pandas as pd

from transforms.keys import is_in


def upsert(current: pd.DataFrame, changed: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Changed rows replace current rows with the same key; new keys are added."""
    if changed.empty:
        return current
    if current.empty:
        return changed.drop_duplicates(key, keep="last").reset_index(drop=True)
    merged = pd.concat([current, changed], ignore_index=True)
    return merged.drop_duplicates(key, keep="last").reset_index(drop=True)


def replace_children(
    current: pd.DataFrame,
    changed: pd.DataFrame,
    parent_ids: pd.Series,
    parent_key: str = "opportunity_id",
) -> pd.DataFrame:
    """The history of each changed parent is replaced whole (rows may have been removed)."""
    kept = current[~is_in(current[parent_key], parent_ids)]
    if changed.empty:
        return kept.reset_index(drop=True)
    return pd.concat([kept, changed], ignore_index=True) if not kept.empty else changed


def drop_missing_parents(
    frame: pd.DataFrame, live_ids: pd.Series, parent_key: str = "opportunity_id"
) -> pd.DataFrame:
    """Rows of opportunities the source no longer has (hard deletes)."""
    return frame[frame[parent_key].isna() | is_in(frame[parent_key], live_ids)].reset_index(
        drop=True
    )
