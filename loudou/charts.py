"""Digest charts as PNG (mail clients block SVG and data URIs), readable on a phone."""

from __future__ import annotations

import io
from functools import lru_cache
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib import font_manager

from loudou.errors import LoudouError

CJK_FONT = "Noto Sans CJK SC"
WIDTH_IN, DPI = 5.6, 100  # 560 px: fits a 600 px mail column


@lru_cache(maxsize=1)
def use_cjk_font() -> None:
    """Chinese labels need a CJK font; boxes instead of characters would be a bug."""
    names = {f.name for f in font_manager.fontManager.ttflist}
    if CJK_FONT not in names:
        # a font cache built before the font was installed does not know it
        font_manager.fontManager = font_manager._load_fontmanager(try_read_cache=False)
        names = {f.name for f in font_manager.fontManager.ttflist}
    if CJK_FONT not in names:
        raise LoudouError(
            f"charts: the font {CJK_FONT!r} is missing; install Debian's "
            "fonts-noto-cjk (make system-deps)"
        )
    matplotlib.rcParams["font.family"] = [CJK_FONT, "DejaVu Sans"]


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def funnel_chart(rows: list[dict[str, Any]], t: dict[str, Any], fmt: Any) -> bytes:
    """Open deals by stage: count on the left, amount on the right."""
    use_cjk_font()
    stages = [r["stage"] for r in rows][::-1]
    counts = [r["open_count"] for r in rows][::-1]
    amounts = [r["open_amount"] for r in rows][::-1]
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(WIDTH_IN, 0.5 * len(rows) + 1.2), sharey=True
    )
    left.barh(stages, counts, color="#2680c2")
    right.barh(stages, amounts, color="#f0b429")
    for axis, values, label in ((left, counts, t["deals"]), (right, amounts, t["amount"])):
        axis.set_title(label, fontsize=10)
        axis.spines[["top", "right"]].set_visible(False)
        axis.tick_params(labelsize=9)
        axis.set_xticks([])
        for y, value in enumerate(values):
            text = fmt.number(value) if axis is left else fmt.money(value)
            axis.text(value, y, f" {text}", va="center", fontsize=9)
        axis.set_xlim(0, max([*values, 1]) * 1.45)
    figure.suptitle(t["funnel_chart"], fontsize=11, y=1.06)
    return _png(figure)


def movement_chart(rows: list[dict[str, Any]], t: dict[str, Any], fmt: Any) -> bytes:
    """The week's bridge as a waterfall from start to end."""
    use_cjk_font()
    falling = {"amount_down", "won", "lost", "moved_out", "removed"}
    labels, bottoms, heights, colors = [], [], [], []
    level = 0.0
    for row in rows:
        amount = float(row["amount"])
        labels.append(row["label"])
        if row["bucket"] in ("start", "end"):
            bottoms.append(0.0)
            heights.append(amount)
            colors.append("#52606d")
            level = amount
        elif row["bucket"] in falling:
            level -= amount
            bottoms.append(level)
            heights.append(amount)
            colors.append("#ba2525" if row["bucket"] != "won" else "#2f8132")
        else:
            bottoms.append(level)
            heights.append(amount)
            colors.append("#2680c2")
            level += amount
    figure, axis = plt.subplots(figsize=(WIDTH_IN, 3.2))
    axis.bar(range(len(labels)), heights, bottom=bottoms, color=colors)
    axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=9)
    axis.set_yticks([])
    axis.spines[["top", "right", "left"]].set_visible(False)
    for x, (bottom, height) in enumerate(zip(bottoms, heights)):
        axis.text(x, bottom + height, fmt.money(height), ha="center", va="bottom", fontsize=8)
    axis.set_title(t["movement_chart"], fontsize=11)
    return _png(figure)
