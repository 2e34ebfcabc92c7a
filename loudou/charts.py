"""Digest charts as PNG (mail clients block SVG and data URIs), readable on a phone."""

from __future__ import annotations

import io
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
from matplotlib import font_manager
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ft2font import FT2Font
from matplotlib.text import Text

from loudou.errors import LoudouError

CJK_FONT = "Noto Sans CJK SC"
# 560 px wide as shown (a 600 px mail column), drawn at 2x for sharp phone screens
WIDTH_IN, DPI = 5.6, 200
PALETTE_COLOURS = 64


@lru_cache(maxsize=1)
def use_cjk_font() -> None:
    """Chinese labels need a CJK font; boxes instead of characters would be a bug."""
    fonts = font_manager.fontManager
    if CJK_FONT not in {f.name for f in fonts.ttflist}:
        # a font cache built before the font was installed does not know it: the system's
        # font files it lacks are added to the manager in use (matplotlib's findfont is bound
        # to it; a new manager would go unread), and the cache is written again for next time
        known = {f.fname for f in fonts.ttflist}
        for path in font_manager.findSystemFonts():
            if path not in known:
                with suppress(RuntimeError, OSError):  # a file FreeType cannot read
                    fonts.addfont(path)
        cache = Path(matplotlib.get_cachedir(), f"fontlist-v{fonts.__version__}.json")
        font_manager.json_dump(fonts, cache)
    if CJK_FONT not in {f.name for f in fonts.ttflist}:
        raise LoudouError(
            f"charts: the font {CJK_FONT!r} is missing; install Debian's "
            "fonts-noto-cjk (make system-deps)"
        )
    matplotlib.rcParams["font.family"] = [CJK_FONT, "DejaVu Sans"]


# A digest's charts differ from the next one's only in their numbers. Each process keeps one
# figure per chart, labels and language, drawn once without its bars and value labels; a
# chart restores those pixels and draws the bars and the spines over them (laying out and
# drawing axes and CJK text anew for every digest was most of a digest's time). The value
# labels are written by Pillow at the places their Text artists hold: matplotlib took 1.7 ms
# to lay out and draw each, about 17 of a chart's milliseconds.
@dataclass
class _Chart:
    figure: Figure
    background: Any  # the pixels of everything that does not move
    layers: list[Artist]  # what each chart draws over them, in z-order
    labels: list[Text]  # the values, written over the layers (their text and place)

    @classmethod
    def drawn(
        cls, figure: Figure, moving: list[Artist], layers: list[Artist], labels: list[Text]
    ) -> _Chart:
        for artist in [*moving, *labels]:
            artist.set_animated(True)  # left out of the background
        figure.canvas.draw()
        return cls(figure, figure.canvas.copy_from_bbox(figure.bbox), layers, labels)

    def png(self) -> bytes:
        canvas = self.figure.canvas
        canvas.restore_region(self.background)
        for artist in self.layers:
            self.figure.draw_artist(artist)
        width, height = canvas.get_width_height()
        image = PIL.Image.frombuffer(
            "RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1
        ).convert("RGB")
        draw = PIL.ImageDraw.Draw(image)
        for label in self.labels:
            if text := label.get_text():
                x, y = label.get_transform().transform(label.get_unitless_position())
                draw.text(
                    (x, height - y),  # the canvas counts up from the bottom, Pillow down
                    text,
                    fill=to_hex(label.get_color()),
                    font=_label_font(label.get_fontsize() * self.figure.dpi / 72),
                    anchor=_ANCHOR_H[label.get_ha()] + _ANCHOR_V[label.get_va()],
                )
        buffer = io.BytesIO()
        # a chart of a few flat colours and anti-aliased text in 64 palette colours looks the
        # same and encodes in 2.2 ms instead of 3.2, 9 KB instead of 19; light compression:
        # zlib's default level costs more than it saves on small charts
        palette = image.quantize(PALETTE_COLOURS, method=PIL.Image.Quantize.FASTOCTREE)
        palette.save(buffer, format="png", compress_level=1)
        return buffer.getvalue()


# matplotlib's alignments as Pillow's text anchors (bottom: the descender line, as matplotlib)
_ANCHOR_H = {"left": "l", "center": "m", "right": "r"}
_ANCHOR_V = {"center": "m", "bottom": "d", "top": "a", "baseline": "s"}


@lru_cache(maxsize=8)
def _label_font(pixels: float) -> PIL.ImageFont.FreeTypeFont:
    """The CJK font's face matplotlib draws the charts in, at `pixels`."""
    use_cjk_font()
    path = font_manager.findfont(FontProperties(family=CJK_FONT), fallback_to_default=False)
    for index in range(FT2Font(path).num_faces):  # a .ttc holds several
        font = PIL.ImageFont.truetype(path, pixels, index=index)
        if font.getname()[0] == CJK_FONT:
            return font
    return PIL.ImageFont.truetype(path, pixels)


def _visible_spines(axis: Axes) -> list[Artist]:
    return [spine for spine in axis.spines.values() if spine.get_visible()]


@dataclass
class _FunnelFigure:
    chart: _Chart
    axes: tuple[Axes, Axes]
    bars: tuple[BarContainer, BarContainer]
    values: tuple[list[Text], list[Text]]


@lru_cache(maxsize=16)
def _funnel_figure(stages: tuple[str, ...], titles: tuple[str, str, str]) -> _FunnelFigure:
    use_cjk_font()
    figure = Figure(figsize=(WIDTH_IN, 0.5 * len(stages) + 1.2), dpi=DPI)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, sharey=True)
    bars, values = [], []
    for axis, color, title in ((left, "#2680c2", titles[0]), (right, "#f0b429", titles[1])):
        bars.append(axis.barh(stages, [1] * len(stages), color=color))
        values.append([axis.text(0, y, "", va="center", fontsize=9) for y in range(len(stages))])
        axis.set_title(title, fontsize=10)
        axis.spines[["top", "right"]].set_visible(False)
        axis.tick_params(labelsize=9)
        axis.set_xticks([])
    figure.suptitle(titles[2], fontsize=11)
    figure.tight_layout()
    layers = [*bars[0], *bars[1], *_visible_spines(left), *_visible_spines(right)]
    return _FunnelFigure(
        _Chart.drawn(figure, [*bars[0], *bars[1]], layers, [*values[0], *values[1]]),
        (left, right),
        (bars[0], bars[1]),
        (values[0], values[1]),
    )


def funnel_chart(rows: list[dict[str, Any]], t: dict[str, Any], fmt: Any) -> bytes:
    """Open deals by stage: count on the left, amount on the right."""
    rows = rows[::-1]  # the first stage on top
    chart = _funnel_figure(
        tuple(r["stage"] for r in rows), (t["deals"], t["amount"], t["funnel_chart"])
    )
    columns = (
        ([float(r["open_count"]) for r in rows], fmt.number),
        ([float(r["open_amount"]) for r in rows], fmt.money),
    )
    for axis, bars, texts, (values, formatted) in zip(
        chart.axes, chart.bars, chart.values, columns
    ):
        for bar, text, value in zip(bars, texts, values):
            bar.set_width(value)
            text.set_x(value)
            text.set_text(f" {formatted(value)}")
        axis.set_xlim(0, max([*values, 1]) * 1.45)
    return chart.chart.png()


@dataclass
class _MovementFigure:
    chart: _Chart
    axis: Axes
    bars: BarContainer
    values: list[Text]


@lru_cache(maxsize=64)
def _movement_figure(labels: tuple[str, ...], title: str) -> _MovementFigure:
    use_cjk_font()
    figure = Figure(figsize=(WIDTH_IN, 3.2), dpi=DPI)
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    bars = axis.bar(range(len(labels)), [1] * len(labels))
    axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=9)
    axis.set_yticks([])
    axis.spines[["top", "right", "left"]].set_visible(False)
    values = [axis.text(x, 0, "", ha="center", va="bottom", fontsize=8) for x in range(len(labels))]
    axis.set_title(title, fontsize=11)
    figure.tight_layout()
    chart = _Chart.drawn(figure, list(bars), [*bars, *_visible_spines(axis)], values)
    return _MovementFigure(chart, axis, bars, values)


def movement_chart(rows: list[dict[str, Any]], t: dict[str, Any], fmt: Any) -> bytes:
    """The week's bridge as a waterfall from start to end."""
    falling = {"amount_down", "won", "lost", "moved_out", "removed"}
    chart = _movement_figure(tuple(r["label"] for r in rows), t["movement_chart"])
    level, top, bottom = 0.0, 0.0, 0.0
    for row, bar, text in zip(rows, chart.bars, chart.values):
        amount = float(row["amount"])
        if row["bucket"] in ("start", "end"):
            base, color, level = 0.0, "#52606d", amount
        elif row["bucket"] in falling:
            level -= amount
            base, color = level, "#ba2525" if row["bucket"] != "won" else "#2f8132"
        else:
            base, color = level, "#2680c2"
            level += amount
        bar.set_y(base)
        bar.set_height(amount)
        bar.set_color(color)
        text.set_y(base + amount)
        text.set_text(fmt.money(amount))
        top, bottom = max(top, base + amount), min(bottom, base)
    chart.axis.set_ylim(bottom, max(top, 1.0) * 1.12)
    return chart.chart.png()
