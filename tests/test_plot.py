"""The line-chart writer: lines, bands and markers really drawn in their palette colours, panels, clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from recursive_reasoning.plot import (BAND_ALPHA, PALETTE, Series, _linear_axis, _log_axis, _tick_label,
                                      chart_panels, line_chart)

SIZE = (640, 400)


def pixels(path) -> np.ndarray:
    """The PNG at `path` as an [H, W, 3] uint8 array (checking it is RGB)."""
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def count(array: np.ndarray, rgb, tolerance: int = 0) -> int:
    """How many pixels are within `tolerance` of `rgb` in every channel."""
    return int((np.abs(array.astype(int) - np.array(rgb)) <= tolerance).all(-1).sum())


def blended(rgb) -> tuple[int, ...]:
    """A band pixel over the white background: the palette colour at BAND_ALPHA."""
    a = BAND_ALPHA / 255
    return tuple(round(255 * (1 - a) + c * a) for c in rgb)


def two_series() -> list[Series]:
    x = np.geomspace(1e12, 4e14, 10)
    trm = Series("TRM (T 3, n 6)", x, 80 * (1 - np.exp(-np.linspace(0, 3, 10))), spread=np.linspace(2, 8, 10),
                 points=[(4e14, 70.0, 5.0)])
    hrm = Series("HRM", x, 50 * (1 - np.exp(-np.linspace(0, 2, 10))))
    return [trm, hrm]


def test_log_chart_draws_every_series_band_and_point(tmp_path):
    out = line_chart(tmp_path / "sub" / "dir" / "acc_vs_flops.png", two_series(), "accuracy vs FLOPs",
                     "training FLOPs", "exact accuracy (%)", log_x=True, size=SIZE)
    assert out == tmp_path / "sub" / "dir" / "acc_vs_flops.png" and out.is_file()
    with Image.open(out) as image:
        assert image.size == SIZE and image.format == "PNG"
    array = pixels(out)
    assert count(array, PALETTE[0]) > 200  # line, markers, diamond, error bar and legend swatch of series 0
    assert count(array, PALETTE[1]) > 200
    assert count(array, blended(PALETTE[0]), tolerance=2) > 500  # the translucent spread band
    assert count(array, blended(PALETTE[1]), tolerance=2) == 0  # series 1 has no spread
    assert sorted(p.name for p in out.parent.iterdir()) == ["acc_vs_flops.png"]  # no temporary file left


def test_linear_chart_y_range_nan_and_single_point(tmp_path):
    nan_series = Series("gappy", [0, 10, 20, 30, 40], [5, 10, math.nan, 30, 35], spread=[1, 1, 1, math.nan, 2])
    lone = Series("lone", [25], [50])
    out = line_chart(tmp_path / "seconds.png", [nan_series, lone], "accuracy vs seconds", "wall-clock seconds",
                     "exact accuracy (%)", y_range=(0, 100), size=SIZE)
    array = pixels(out)
    assert array.shape == (SIZE[1], SIZE[0], 3)
    assert count(array, PALETTE[0]) > 100
    assert count(array, PALETTE[1]) > 30  # a single point still gets its marker (and a legend swatch)
    assert count(array, blended(PALETTE[0]), tolerance=2) > 50


def test_overwrite_keeps_one_file(tmp_path):
    target = tmp_path / "chart.png"
    for _ in range(2):
        line_chart(target, two_series()[1:], "t", "x", "y", size=SIZE)
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]


def test_panels_width_is_columns_times_chart(tmp_path):
    series = two_series()
    panels = [dict(series=series, title="vs FLOPs", x_label="FLOPs", y_label="acc", log_x=True),
              dict(series=series, title="vs seconds", x_label="s", y_label="acc"),
              dict(series=series[:1], title="third", x_label="s", y_label="acc")]
    out = chart_panels(tmp_path / "panels.png", panels, columns=2, size=SIZE)
    with Image.open(out) as image:
        assert image.size == (2 * SIZE[0], 2 * SIZE[1]) and image.mode == "RGB"
    with pytest.raises(ValueError, match="panel 1.*'broken'.*x has 2 values but y has 1"):
        chart_panels(tmp_path / "bad.png", [panels[0], dict(series=[Series("broken", [1, 2], [1])], title="b",
                                                                   x_label="x", y_label="y")], size=SIZE)
    with pytest.raises(ValueError, match="unknown keys"):
        chart_panels(tmp_path / "bad.png", [dict(panels[0], colour="red")], size=SIZE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["panels.png"]


@pytest.mark.parametrize(("series", "log_x", "message"), [
    ([], False, "no series"),
    ([Series("short y", [1, 2, 3], [1, 2])], False, "'short y'.*x has 3 values but y has 2"),
    ([Series("short sd", [1, 2], [1, 2], spread=[1])], False, "'short sd'.*spread has 1 values"),
    ([Series("zero x", [0, 1e12], [1, 2])], True, "'zero x'.*positive on a log x axis"),
    ([Series("neg point", [1e12], [1], points=[(-5.0, 1.0, 0.1)])], True, "'neg point'.*positive"),
    ([Series("unsorted", [2, 1], [1, 2])], False, "'unsorted'.*increasing"),
    ([Series("all nan", [1, 2], [math.nan, math.nan])], False, "nothing to draw.*'all nan'"),
])
def test_bad_input_names_the_problem(tmp_path, series, log_x, message):
    with pytest.raises(ValueError, match=message):
        line_chart(tmp_path / "bad.png", series, "t", "x", "y", log_x=log_x, size=SIZE)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file


def test_ticks_are_round():
    lo, hi, ticks, step = _linear_axis(0.0, 83.0, 6, fixed=False)
    assert lo < 0 < 83 < hi and ticks == [0, 20, 40, 60, 80] and step == 20
    assert [_tick_label(v, 5e12) for v in (0.0, 5e12, 1e13)] == ["0", "5e12", "1e13"]
    assert [_tick_label(v, 0.5) for v in (1.0, 1.5)] == ["1.0", "1.5"]
    assert [text for _, text in _log_axis(1e12, 3e14)[2]] == ["1e12", "1e13", "1e14"]
    assert [text for _, text in _log_axis(2e12, 7e12)[2]] == ["2e12", "5e12"]  # under a decade: 2 and 5 labelled
