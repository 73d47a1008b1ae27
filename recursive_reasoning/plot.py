"""Line charts for comparing methods (accuracy against FLOPs or seconds), drawn with Pillow and numpy alone.

`line_chart` writes one PNG: a line per `Series` in a fixed colour-blind-friendly palette (Okabe-Ito), round markers
at its data points, a translucent band for its spread over seeds, extra markers with error bars (`Series.points`),
nice round ticks (decades such as 1e12 on a log axis), axis labels, a title and a legend. `chart_panels` puts several
such charts side by side in one PNG. Files are written atomically (`write_png`), parents created; fonts come
from `datamodules.kinds.drawing.load_font`, as the puzzle pictures' do.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from datamodules.kinds.drawing import load_font, text_size, write_png

__all__ = ["BAND_ALPHA", "PALETTE", "Series", "chart_image", "chart_panels", "line_chart"]

# Okabe-Ito, ordered so the first colours are the most distinct on white; yellow (weak on white) comes last.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 114, 178),  # blue
    (230, 159, 0),  # orange
    (0, 158, 115),  # bluish green
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
    (86, 180, 233),  # sky blue
    (0, 0, 0),  # black
    (240, 228, 66),  # yellow
)
BAND_ALPHA = 56  # opacity (of 255) of a spread band
LINE_WIDTH = 3
MARKER_RADIUS = 4
POINT_RADIUS = 6  # the half-diagonal of a `Series.points` diamond
MAX_MARKERS = 60  # denser series get no per-point markers: they would merge into a thick line
MIN_SIZE = (240, 160)

WHITE = (255, 255, 255)
INK = (34, 34, 34)
AXIS = (68, 68, 68)
GRID = (232, 232, 232)
PAD = 10
TICK = 5
MINOR_TICK = 3


@dataclass
class Series:
    """One method's curve: mean `y` at increasing `x`, an optional +-`spread` band and extra `points` (x, y, yerr)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    spread: Sequence[float] | None = None
    points: Sequence[tuple[float, float, float]] = ()


def colour(index: int) -> tuple[int, int, int]:
    """The palette colour of the `index`-th series (the palette cycles)."""
    return PALETTE[index % len(PALETTE)]


# ------------------------------------------------------------------ validation


def _floats(values: Sequence[float], what: str, label: str) -> np.ndarray:
    """`values` as a 1-D float array, or a ValueError naming the series when they are not numbers."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"series {label!r}: {what} must be numbers ({err})") from err
    if array.ndim != 1:
        raise ValueError(f"series {label!r}: {what} must be a flat sequence of numbers, got shape {array.shape}")
    return array


@dataclass
class _Clean:
    """A validated series as arrays: x, y (NaN where skipped), spread (NaN where none) and points [k, 3]."""

    label: str
    x: np.ndarray
    y: np.ndarray
    spread: np.ndarray
    points: np.ndarray


def _check(series: Sequence[Series], log_x: bool) -> list[_Clean]:
    """Validated arrays of every series; ValueError naming the series on mismatched lengths or bad values."""
    if isinstance(series, Series):
        series = [series]
    if len(series) == 0:
        raise ValueError("line chart has no series to plot: pass at least one Series")
    clean = []
    for s in series:
        if not isinstance(s, Series):
            raise ValueError(f"line chart takes Series objects, got a {type(s).__name__}")
        label = str(s.label)
        x, y = _floats(s.x, "x", label), _floats(s.y, "y", label)
        if len(x) != len(y):
            raise ValueError(f"series {label!r}: x has {len(x)} values but y has {len(y)}")
        if not np.isfinite(x).all():
            raise ValueError(f"series {label!r}: x holds NaN or infinite values; x positions must be finite")
        if len(x) > 1 and (np.diff(x) < 0).any():
            raise ValueError(f"series {label!r}: x must be increasing (sorted), got {x.tolist()[:8]}")
        if log_x and (x <= 0).any():
            raise ValueError(f"series {label!r}: x must be positive on a log x axis, got {x[x <= 0][0]:g}")
        spread = np.full(len(x), np.nan)
        if s.spread is not None:
            spread = _floats(s.spread, "spread", label)
            if len(spread) != len(y):
                raise ValueError(f"series {label!r}: spread has {len(spread)} values but y has {len(y)}")
            if (spread < 0).any():
                raise ValueError(f"series {label!r}: spread must be non-negative (a +- half-width)")
        points = np.asarray(list(s.points), dtype=float) if len(s.points) else np.zeros((0, 3))
        if points.ndim != 2 or points.shape[1] != 3:
            raise ValueError(f"series {label!r}: points must be (x, y, yerr) triples")
        if not np.isfinite(points[:, 0]).all():
            raise ValueError(f"series {label!r}: a point has a NaN or infinite x")
        if log_x and (points[:, 0] <= 0).any():
            raise ValueError(f"series {label!r}: point x must be positive on a log x axis, "
                             f"got {points[points[:, 0] <= 0][0, 0]:g}")
        if (points[:, 2] < 0).any():
            raise ValueError(f"series {label!r}: point yerr must be non-negative")
        y = np.where(np.isfinite(y), y, np.nan)
        clean.append(_Clean(label, x, y, spread, points))
    return clean


# ------------------------------------------------------------------ ticks


def _nice_step(span: float, target: int) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about `target` intervals over `span`."""
    raw = span / max(target, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * magnitude >= raw * (1 - 1e-9):
            return m * magnitude
    return 10.0 * magnitude


def _linear_axis(lo: float, hi: float, target: int, fixed: bool) -> tuple[float, float, list[float], float]:
    """Axis limits (the data range padded by 3% unless `fixed`), round tick values within them, and the step."""
    if hi <= lo:
        half = abs(lo) * 0.1 if lo != 0 else 1.0
        lo, hi = lo - half, hi + half
    elif not fixed:
        pad = (hi - lo) * 0.03
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi - lo, target)
    while True:
        first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
        if last - first >= 2:  # at least three labelled ticks: go a round step finer until there are
            return lo, hi, [k * step for k in range(first, last + 1)], step
        mantissa = step / 10.0 ** math.floor(math.log10(step) + 1e-9)
        step *= 0.4 if mantissa > 4 else 0.5  # the next round step below: 5 -> 2 -> 1 -> 0.5


def _tick_label(value: float, step: float) -> str:
    """A short label for a linear tick: plain decimals in [1e-3, 1e5), otherwise mantissa-e-exponent (2.5e12)."""
    if abs(value) < step * 1e-6:
        return "0"
    big = max(abs(value), step)
    step_exp = math.floor(math.log10(step) + 1e-9)
    if 1e-3 <= big < 1e5:
        return f"{value:.{max(0, -step_exp)}f}"
    exp = math.floor(math.log10(abs(value)) + 1e-9)
    decimals = max(0, exp - step_exp)
    mantissa = round(value / 10.0**exp, decimals)
    if abs(mantissa) >= 10:
        exp, mantissa = exp + 1, round(mantissa / 10, decimals)
    text = f"{mantissa:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{mantissa:.0f}"
    return f"{text}e{exp}"


def _power_label(mantissa: int, exp: int) -> str:
    """The label of mantissa * 10**exp on a log axis: plain for 1 to 9000, otherwise 1e12, 5e-3."""
    if 0 <= exp <= 3:
        return str(mantissa * 10**exp)
    return f"{mantissa}e{exp}"


def _log_axis(lo: float, hi: float) -> tuple[float, float, list[tuple[float, str]], list[float]]:
    """Limits in log10 units (the data range padded by 3%), labelled major ticks (log10 value, text) and minor
    tick positions; a range spanning under two decades also labels 2 and 5 times a power of ten (then every digit)."""
    low, high = math.log10(lo), math.log10(hi)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    else:
        pad = (high - low) * 0.03
        low, high = low - pad, high + pad
    first, last = math.floor(low), math.ceil(high)
    every = max(1, math.ceil((last - first) / 8))
    major = [(float(k), _power_label(1, k)) for k in range(first, last + 1)
             if low - 1e-9 <= k <= high + 1e-9 and k % every == 0]
    candidates = [(k + math.log10(m), m, k) for k in range(first, last) for m in range(2, 10)]
    candidates = [c for c in candidates if low <= c[0] <= high]
    labelled: set[int] = set()
    if len(major) < 2:
        labelled = {2, 5}
        if len(major) + sum(m in labelled for _, m, _ in candidates) < 2:
            labelled = set(range(2, 10))
    major += [(pos, _power_label(m, k)) for pos, m, k in candidates if m in labelled]
    minor = [pos for pos, m, _ in candidates if m not in labelled] if last - first <= 6 else []
    return low, high, sorted(major), minor


# ------------------------------------------------------------------ drawing


def _rotated_text(text: str, font: Any, fill: tuple[int, int, int]) -> Image.Image:
    """`text` on a transparent RGBA image, turned 90 degrees anticlockwise (for a y axis label)."""
    width, height = text_size(text, font)
    image = Image.new("RGBA", (max(width, 1) + 2, max(height, 1) + 2), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((1, 1), text, font=font, fill=fill + (255,))
    return image.rotate(90, expand=True)


def _runs(mask: np.ndarray) -> list[np.ndarray]:
    """Index arrays of the maximal runs of True in `mask` (the drawable stretches between skipped values)."""
    index = np.flatnonzero(mask)
    if len(index) == 0:
        return []
    breaks = np.flatnonzero(np.diff(index) > 1) + 1
    return np.split(index, breaks)


def chart_image(series: Sequence[Series], title: str, x_label: str, y_label: str, log_x: bool = False,
                y_range: tuple[float, float] | None = None, size: tuple[int, int] = (900, 560)) -> Image.Image:
    """Render the line chart that `line_chart` writes, as an RGB image (for pasting into panels or further use)."""
    width, height = int(size[0]), int(size[1])
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise ValueError(f"chart size {width}x{height} is too small to draw: at least {MIN_SIZE[0]}x{MIN_SIZE[1]}")
    if y_range is not None:
        y_range = (float(y_range[0]), float(y_range[1]))
        if not (math.isfinite(y_range[0]) and math.isfinite(y_range[1]) and y_range[0] < y_range[1]):
            raise ValueError(f"y_range must be two finite numbers (low, high) with low < high, got {y_range}")
    data = _check(series, log_x)

    xs = np.concatenate([d.x[np.isfinite(d.y)] for d in data] + [d.points[:, 0] for d in data])
    lows = [d.y - np.nan_to_num(d.spread) for d in data] + [d.points[:, 1] - d.points[:, 2] for d in data]
    highs = [d.y + np.nan_to_num(d.spread) for d in data] + [d.points[:, 1] + d.points[:, 2] for d in data]
    ys = np.concatenate(lows + highs)
    ys = ys[np.isfinite(ys)]
    if len(xs) == 0 or (len(ys) == 0 and y_range is None):
        raise ValueError("line chart has nothing to draw: every series is empty or all its y values are NaN "
                         f"({', '.join(repr(d.label) for d in data)})")

    title_font, label_font, tick_font, legend_font = load_font(17), load_font(14), load_font(12), load_font(13)
    canvas = Image.new("RGBA", (width, height), WHITE + (255,))
    draw = ImageDraw.Draw(canvas)
    _, tick_h = text_size("0123456789e", tick_font)
    _, label_h = text_size("Xg", label_font)
    _, title_h = text_size(title or "X", title_font)

    # y axis first: its tick labels set the left margin.
    top = PAD + (title_h + PAD if title else 0) + 4
    bottom = height - (TICK + 4 + tick_h + (PAD + label_h if x_label else 0) + PAD)
    plot_h = bottom - top
    y_lo, y_hi = (y_range if y_range is not None else (float(ys.min()), float(ys.max())))
    y_lo, y_hi, y_ticks, y_step = _linear_axis(y_lo, y_hi, max(3, plot_h // 60), fixed=y_range is not None)
    y_texts = [_tick_label(v, y_step) for v in y_ticks]
    y_tick_w = max(text_size(t, tick_font)[0] for t in y_texts) if y_texts else 0
    left = PAD + (label_h + PAD if y_label else 0) + y_tick_w + TICK + 4
    right = width - PAD - 24
    plot_w = right - left
    if plot_w < 60 or plot_h < 40:
        raise ValueError(f"chart size {width}x{height} leaves no room for the plot area: make it larger")

    x_lo, x_hi = float(xs.min()), float(xs.max())
    if log_x:
        x_lo, x_hi, x_major, x_minor = _log_axis(x_lo, x_hi)
    else:
        x_lo, x_hi, ticks, x_step = _linear_axis(x_lo, x_hi, max(3, plot_w // 110), fixed=False)
        x_major, x_minor = [(v, _tick_label(v, x_step)) for v in ticks], []

    def px(x: np.ndarray | float) -> np.ndarray:
        """Pixel column of data x (log10 of it on a log axis)."""
        value = np.log10(np.asarray(x, dtype=float)) if log_x else np.asarray(x, dtype=float)
        return left + (value - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: np.ndarray | float) -> np.ndarray:
        """Pixel row of data y."""
        return bottom - (np.asarray(y, dtype=float) - y_lo) / (y_hi - y_lo) * plot_h

    def ax(pos: float) -> float:
        """Pixel column of a tick position already in axis units (log10 on a log axis)."""
        return left + (pos - x_lo) / (x_hi - x_lo) * plot_w

    # Grid, then the data on a layer covering the plot area plus a margin, so markers at the edge stay whole and
    # anything outside a fixed y_range is clipped.
    for v in y_ticks:
        draw.line([(left, float(py(v))), (right, float(py(v)))], fill=GRID, width=1)
    for pos, _ in x_major:
        draw.line([(ax(pos), top), (ax(pos), bottom)], fill=GRID, width=1)
    margin = POINT_RADIUS + 3
    box = (left - margin, top - margin, right + margin, bottom + margin)
    layer = canvas.crop(box)
    offset = np.array([box[0], box[1]], dtype=float)

    def local(xp: np.ndarray, yp: np.ndarray) -> list[tuple[float, float]]:
        """Canvas pixel coordinates moved into the data layer."""
        return [(float(a - offset[0]), float(b - offset[1])) for a, b in zip(xp, yp)]

    for i, d in enumerate(data):
        band = np.isfinite(d.y) & np.isfinite(d.spread)
        for run in _runs(band):
            overlay = Image.new("RGBA", layer.size, (0, 0, 0, 0))
            shade = ImageDraw.Draw(overlay)
            xp = px(d.x[run])
            upper, lower = py(d.y[run] + d.spread[run]), py(d.y[run] - d.spread[run])
            if len(run) == 1:  # a lone point's spread: a short translucent bar
                xp = np.array([xp[0] - MARKER_RADIUS, xp[0] + MARKER_RADIUS])
                upper, lower = np.repeat(upper, 2), np.repeat(lower, 2)
            outline = local(xp, upper) + local(xp[::-1], lower[::-1])
            shade.polygon(outline, fill=colour(i) + (BAND_ALPHA,))
            layer = Image.alpha_composite(layer, overlay)

    pen = ImageDraw.Draw(layer)
    samples: list[np.ndarray] = []  # canvas pixels the data covers, to keep the legend off it
    for i, d in enumerate(data):
        finite = np.isfinite(d.y)
        for run in _runs(finite):
            xp, yp = px(d.x[run]), py(d.y[run])
            if len(run) > 1:
                pen.line(local(xp, yp), fill=colour(i), width=LINE_WIDTH, joint="curve")
                n = max(2, int(np.hypot(np.diff(xp), np.diff(yp)).sum() // 4))
                t = np.linspace(0, len(run) - 1, n)
                samples.append(np.stack([np.interp(t, np.arange(len(run)), xp),
                                         np.interp(t, np.arange(len(run)), yp)], 1))
            samples.append(np.stack([xp, yp], 1))
        if finite.sum() <= MAX_MARKERS or finite.sum() == 1:
            for cx, cy in local(px(d.x[finite]), py(d.y[finite])):
                r = MARKER_RADIUS
                pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour(i))
    for i, d in enumerate(data):
        for x, y, err in d.points:
            if not math.isfinite(y):
                continue
            (cx, cy), = local(px([x]), py([y]))
            if math.isfinite(err) and err > 0:
                (_, y_top), = local(px([x]), py([y + err]))
                (_, y_bot), = local(px([x]), py([y - err]))
                pen.line([(cx, y_top), (cx, y_bot)], fill=colour(i), width=2)
                for cap in (y_top, y_bot):
                    pen.line([(cx - 5, cap), (cx + 5, cap)], fill=colour(i), width=2)
            r = POINT_RADIUS
            pen.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour(i), outline=INK)
            samples.append(np.array([[cx + offset[0], cy + offset[1]]]))
    canvas.paste(layer, box[:2])

    # Frame, ticks and their labels.
    draw = ImageDraw.Draw(canvas)
    draw.rectangle([left, top, right, bottom], outline=AXIS, width=1)
    for v, text in zip(y_ticks, y_texts):
        row = float(py(v))
        draw.line([(left - TICK, row), (left, row)], fill=AXIS, width=1)
        w, h = text_size(text, tick_font)
        draw.text((left - TICK - 3 - w, row - h / 2), text, font=tick_font, fill=INK)
    for pos in x_minor:
        draw.line([(ax(pos), bottom), (ax(pos), bottom + MINOR_TICK)], fill=AXIS, width=1)
    for pos, text in x_major:
        col = ax(pos)
        draw.line([(col, bottom), (col, bottom + TICK)], fill=AXIS, width=1)
        w, _ = text_size(text, tick_font)
        draw.text((min(max(col - w / 2, 0), width - w), bottom + TICK + 3), text, font=tick_font, fill=INK)

    # Title and axis labels.
    if title:
        w, _ = text_size(title, title_font)
        draw.text((max((left + right - w) / 2, PAD), PAD), title, font=title_font, fill=INK)
    if x_label:
        w, _ = text_size(x_label, label_font)
        draw.text(((left + right - w) / 2, height - PAD - label_h), x_label, font=label_font, fill=INK)
    if y_label:
        turned = _rotated_text(y_label, label_font, INK)
        canvas.alpha_composite(turned, (PAD, int(max((top + bottom - turned.height) / 2, 0))))

    _legend(canvas, data, (left, top, right, bottom), samples, legend_font)
    return canvas.convert("RGB")


def _legend(canvas: Image.Image, data: list[_Clean], area: tuple[int, int, int, int], samples: list[np.ndarray],
            font: Any) -> None:
    """Draw a boxed legend (colour swatch and label per series) in the plot-area corner that hides the least data."""
    draw = ImageDraw.Draw(canvas)
    swatch, gap, inner = 26, 8, 8
    sizes = [text_size(d.label, font) for d in data]
    row_h = max(max(h for _, h in sizes), 2 * MARKER_RADIUS) + 6
    box_w = inner * 2 + swatch + gap + max(w for w, _ in sizes)
    box_h = inner * 2 + row_h * len(data) - 6
    left, top, right, bottom = area
    spots = [(left + 8, top + 8), (right - 8 - box_w, top + 8), (right - 8 - box_w, bottom - 8 - box_h),
             (left + 8, bottom - 8 - box_h)]
    covered = np.concatenate(samples) if samples else np.zeros((0, 2))

    def hidden(spot: tuple[int, int]) -> int:
        """How many data pixels the legend would cover at `spot`."""
        x0, y0 = spot
        inside = ((covered[:, 0] >= x0 - 4) & (covered[:, 0] <= x0 + box_w + 4)
                  & (covered[:, 1] >= y0 - 4) & (covered[:, 1] <= y0 + box_h + 4))
        return int(inside.sum())

    x0, y0 = min(spots, key=hidden)  # ties keep the first: upper left
    x0, y0 = max(x0, 0), max(y0, 0)
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    ImageDraw.Draw(overlay).rectangle([x0, y0, x0 + box_w, y0 + box_h], fill=WHITE + (235,), outline=AXIS + (255,))
    canvas.alpha_composite(overlay)
    draw = ImageDraw.Draw(canvas)
    for i, (d, (_, h)) in enumerate(zip(data, sizes)):
        row = y0 + inner + i * row_h + (row_h - 6) / 2
        sx = x0 + inner
        draw.line([(sx, row), (sx + swatch, row)], fill=colour(i), width=LINE_WIDTH)
        r = MARKER_RADIUS
        draw.ellipse([sx + swatch / 2 - r, row - r, sx + swatch / 2 + r, row + r], fill=colour(i))
        draw.text((sx + swatch + gap, row - h / 2), d.label, font=font, fill=INK)


def _save(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write the RGB `image` as a PNG at `path` atomically (`write_png`); parents created."""
    return write_png(path, np.asarray(image.convert("RGB")))


def line_chart(path: str | os.PathLike, series: Sequence[Series], title: str, x_label: str, y_label: str,
               log_x: bool = False, y_range: tuple[float, float] | None = None,
               size: tuple[int, int] = (900, 560)) -> Path:
    """Write a PNG line chart of `series` (one coloured line each, spread bands, error-barred points, legend) to
    `path`, atomically, and return the path; ValueError naming the series on bad input."""
    return _save(chart_image(series, title, x_label, y_label, log_x=log_x, y_range=y_range, size=size), path)


_PANEL_KEYS = {"series", "title", "x_label", "y_label", "log_x", "y_range"}


def chart_panels(path: str | os.PathLike, panels: Sequence[dict[str, Any]], columns: int = 2,
                 size: tuple[int, int] = (900, 560)) -> Path:
    """Write several charts side by side (`columns` per row, each `size`) in one PNG and return the path; each panel
    dict holds `chart_image`'s arguments (series, title, x_label, y_label, optional log_x and y_range)."""
    if len(panels) == 0:
        raise ValueError("chart_panels has no panels to draw: pass at least one dict of chart arguments")
    if int(columns) < 1:
        raise ValueError(f"chart_panels needs columns >= 1, got {columns}")
    columns = min(int(columns), len(panels))
    images = []
    for i, panel in enumerate(panels):
        unknown = set(panel) - _PANEL_KEYS
        missing = {"series", "title", "x_label", "y_label"} - set(panel)
        if unknown or missing:
            raise ValueError(f"panel {i}: {'unknown keys ' + str(sorted(unknown)) if unknown else ''}"
                             f"{'; ' if unknown and missing else ''}"
                             f"{'missing keys ' + str(sorted(missing)) if missing else ''}; a panel takes "
                             f"{sorted(_PANEL_KEYS)}")
        try:
            images.append(chart_image(size=size, **panel))
        except ValueError as err:
            raise ValueError(f"panel {i} ({panel.get('title')!r}): {err}") from err
    width, height = images[0].size
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * width, rows * height), WHITE)
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * width, (i // columns) * height))
    return _save(sheet, path)
