"""The digest charts' font: Chinese labels drawn in a CJK font, never as boxes."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
from matplotlib import font_manager
from matplotlib.font_manager import FontProperties

from loudou import charts


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
