"""The digest charts: Chinese labels in a CJK font (never boxes), each bar with its value."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import PIL.Image
import PIL.ImageChops
import pytest
from matplotlib import font_manager
from matplotlib.font_manager import FontProperties

from loudou import charts
from loudou.digest import Formats, labels


@pytest.fixture
def stale_font_cache(tmp_path, monkeypatch):
    """matplotlib's font list as a cache written before the CJK font was installed left it."""
    fonts = font_manager.fontManager
    kept = list(fonts.ttflist)
    monkeypatch.setattr(matplotlib, "get_cachedir", lambda: str(tmp_path))
    cjk_files = {f.fname for f in kept if f.name == charts.CJK_FONT}
    fonts.ttflist = [f for f in kept if f.fname not in cjk_files]
    fonts._findfont_cached.cache_clear()
    charts.use_cjk_font.cache_clear()
    yield tmp_path
    fonts.ttflist = kept
    fonts._findfont_cached.cache_clear()
    charts.use_cjk_font.cache_clear()


def test_a_font_cache_older_than_the_cjk_font_still_finds_it(stale_font_cache):
    with pytest.raises(ValueError):  # the stale list, as matplotlib reads it
        font_manager.findfont(FontProperties(family=charts.CJK_FONT), fallback_to_default=False)
    charts.use_cjk_font()
    # matplotlib's own lookup (what drawing text uses) now finds the font's file
    found = font_manager.findfont(FontProperties(family=charts.CJK_FONT), fallback_to_default=False)
    assert "NotoSansCJK" in Path(found).name
    version = font_manager.FontManager.__version__
    cache = (stale_font_cache / f"fontlist-v{version}.json").read_text(encoding="utf-8")
    assert charts.CJK_FONT in cache  # the next process reads the font from the cache


def _funnel(counts: list[int]) -> PIL.Image.Image:
    rows = [
        {"stage": stage, "open_count": n, "open_amount": n * 10_000.0}
        for stage, n in zip(("发现机会", "明确需求", "购买决策"), counts, strict=True)
    ]
    texts = labels("zh-CN")
    png = charts.funnel_chart(rows, texts, Formats(texts["locale"], "CNY"))
    return PIL.Image.open(io.BytesIO(png)).convert("L")


def test_each_bar_is_labelled_with_its_value_just_past_its_end():
    # the same bars (each chart scales to its largest value), different numbers
    small, large = _funnel([10, 20, 5]), _funnel([1000, 2000, 500])
    width = small.width
    assert small.size == large.size
    # beyond what the palette (chosen per image) moves in anti-aliased edges
    changed = np.asarray(PIL.ImageChops.difference(small, large)) > 96
    assert changed.any()  # the labels differ, so the pixels do
    columns = np.flatnonzero(changed.any(axis=0))
    left, right = columns.min(), columns.max()
    # only the value labels differ: in both halves (counts, amounts), nowhere near the axes'
    # stage names at the far left
    assert left > width * 0.2 and right > width * 0.6
    dark = np.asarray(large) < 100
    assert dark[:, int(width * 0.2) : int(width * 0.5)].any()  # the counts' labels are drawn
