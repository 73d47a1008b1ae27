"""Tests of datamodules.kinds.drawing (PNG files, text, digit and colour frames, the filmstrip) and of the kinds'
frames built on it: pixel colours of given cells, changed and wrong cells marked, exact sizes, round trips."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules.kinds import MazeKind, SudokuKind
from datamodules.kinds.arc import ARC_PALETTE, arc_token_colours
from datamodules.kinds.drawing import (
    BLACK,
    BLUE,
    CAPTION_GAP,
    CAPTION_SIZE,
    CHANGED_BG,
    GRID_LINE,
    MARK,
    MARK_ALT,
    THICK_LINE,
    THIN_LINE,
    TITLE_SIZE,
    WHITE,
    WRONG_BG,
    colour_frame,
    digit_frame,
    draw_text,
    filmstrip,
    grid_layout,
    load_font,
    read_png_size,
    text_size,
    write_png,
)
from datamodules.kinds.maze import MAZE_PALETTE


def solid(height: int, width: int, colour: tuple[int, int, int]) -> np.ndarray:
    """A uint8 [height, width, 3] image of one colour."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = colour
    return image


def pixels(path: Path) -> np.ndarray:
    """The PNG at `path` as uint8 [H, W, 3], read back by Pillow (checking it is an RGB PNG)."""
    with Image.open(path) as image:
        assert image.format == "PNG" and image.mode == "RGB"
        return np.asarray(image)


def count(image: np.ndarray, colour: tuple[int, int, int]) -> int:
    """How many pixels of `image` are exactly `colour`."""
    return int((image == np.array(colour, dtype=np.uint8)).all(axis=-1).sum())


def cell_block(image: np.ndarray, n: int, r: int, c: int, box: tuple[int, int] | None, cell: int = 28) -> np.ndarray:
    """The pixels of cell (r, c) of a digit frame."""
    layout = grid_layout(n, cell, box)
    y, x = int(layout.tops[r]), int(layout.lefts[c])
    return image[y : y + cell, x : x + cell]


# ----------------------------------------------------------------------------------------------------------------
# PNG files


@pytest.mark.parametrize("shape", [(1, 1, 3), (17, 23, 3), (64, 5, 3)])
def test_png_round_trip_exact_pixels(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = write_png(tmp_path / "x.png", image)
    assert path == tmp_path / "x.png"
    np.testing.assert_array_equal(pixels(path), image)
    assert read_png_size(path) == (shape[1], shape[0]) and read_png_size(str(path)) == (shape[1], shape[0])


def test_png_of_a_non_contiguous_view_round_trips(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)[::2, ::3]
    np.testing.assert_array_equal(pixels(write_png(tmp_path / "v.png", image)), image)


def test_write_png_overwrites_atomically_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "t.png"
    write_png(target, np.zeros((2, 2, 3), dtype=np.uint8))
    image = np.full((3, 4, 3), 200, dtype=np.uint8)
    write_png(target, image)
    assert sorted(p.name for p in target.parent.iterdir()) == ["t.png"]
    np.testing.assert_array_equal(pixels(target), image)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_keeps_the_old_picture(tmp_path: Path) -> None:
    target = tmp_path / "keep.png"
    old = solid(3, 3, (1, 2, 3))
    write_png(target, old)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        write_png(target, np.zeros((3, 3), dtype=np.uint8))
    np.testing.assert_array_equal(pixels(target), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), TypeError, "uint8"),
        (np.zeros((4, 4), dtype=np.uint8), ValueError, r"\[H, W, 3\]"),
        (np.zeros((4, 4, 4), dtype=np.uint8), ValueError, r"\[H, W, 3\]"),
        (np.zeros((0, 4, 3), dtype=np.uint8), ValueError, "empty"),
        ([[0, 0, 0]], TypeError, "numpy array"),
    ],
)
def test_write_png_rejects_bad_images(tmp_path: Path, image: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        write_png(tmp_path / "bad.png", image)  # type: ignore[arg-type]
    assert not (tmp_path / "bad.png").exists()


def test_read_png_size_rejects_other_files(tmp_path: Path) -> None:
    Image.new("RGB", (5, 4)).save(tmp_path / "gif.png", format="GIF")
    with pytest.raises(ValueError, match="GIF image, not a PNG"):
        read_png_size(tmp_path / "gif.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match="not a PNG"):
        read_png_size(tmp_path / "junk.png")


# ----------------------------------------------------------------------------------------------------------------
# Text


def test_fonts_scale_and_are_shared() -> None:
    assert load_font(20) is load_font(20)
    small, large = text_size("step 12", load_font(10)), text_size("step 12", load_font(30))
    assert large[0] > 2 * small[0] and large[1] > 2 * small[1]
    assert text_size("", load_font(14))[0] == 0


def test_draw_text_inks_only_where_it_is_told() -> None:
    image = solid(40, 120, WHITE)
    draw_text(image, "q 0.91", 5, 5, BLUE, size=16)
    inked = (image != 255).any(axis=2)
    ys, xs = np.nonzero(inked)
    width, height = text_size("q 0.91", load_font(16))
    assert xs.min() >= 5 and xs.max() < 5 + width and ys.min() >= 5 and ys.max() < 5 + height
    assert count(image, BLUE) > 20

    centred = solid(41, 41, WHITE)
    draw_text(centred, "8", 20, 20, BLACK, size=24, centre=True)
    ys, xs = np.nonzero((centred != 255).any(axis=2))
    assert abs((ys.min() + ys.max()) / 2 - 20) <= 1.5 and abs((xs.min() + xs.max()) / 2 - 20) <= 1.5


def test_draw_text_cuts_ink_outside_the_image() -> None:
    image = solid(10, 10, WHITE)
    draw_text(image, "WWWW", -8, -4, BLACK, size=20)
    assert image.shape == (10, 10, 3) and count(image, BLACK) > 0


# ----------------------------------------------------------------------------------------------------------------
# Digit frames


@pytest.mark.parametrize(("n", "box", "height", "width"), [(4, (2, 2), 123, 123), (6, (2, 3), 183, 181),
                                                           (9, (3, 3), 270, 270), (5, None, 150, 150)])
def test_digit_frame_size(n: int, box: tuple[int, int] | None, height: int, width: int) -> None:
    image = digit_frame(np.zeros((n, n), dtype=np.int64), box=box)
    layout = grid_layout(n, 28, box)
    assert image.shape == (height, width, 3) == (layout.height, layout.width, 3)


def test_digit_frame_lines_and_empty_cells() -> None:
    image = digit_frame(np.zeros((4, 4), dtype=np.int64), box=(2, 2))
    layout = grid_layout(4, 28, (2, 2))
    assert (image[:3] == THICK_LINE).all() and (image[:, -3:] == THICK_LINE).all()
    middle = int(layout.tops[2]) - 3  # the thick line between the two bands of boxes
    assert (image[middle : middle + 3] == THICK_LINE).all()
    thin = int(layout.tops[1]) - 1  # a thin line inside a box
    x = int(layout.lefts[0])
    assert (image[thin, x : x + 28] == THIN_LINE).all()
    for r in range(4):
        for c in range(4):
            assert (cell_block(image, 4, r, c, (2, 2)) == WHITE).all()


def test_digit_frame_colours_givens_filled_changed_and_wrong_cells() -> None:
    digits = np.array([[1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 3, 0], [0, 0, 0, 4]])
    givens = np.zeros((4, 4), dtype=bool)
    givens[0, 0] = True
    changed = np.zeros((4, 4), dtype=bool)
    changed[0, 1] = changed[3, 3] = True
    wrong = np.zeros((4, 4), dtype=bool)
    wrong[2, 2] = wrong[3, 3] = True
    image = digit_frame(digits, givens, changed, wrong, box=(2, 2))

    def block(r: int, c: int) -> np.ndarray:
        return cell_block(image, 4, r, c, (2, 2))

    given, filled = block(0, 0), block(0, 1)
    assert count(given, BLACK) > 10 and count(given, BLUE) == 0, "givens are black"
    assert count(filled, BLUE) > 10 and count(filled, BLACK) == 0, "filled-in digits are blue"
    assert (filled[:3, :3] == CHANGED_BG).all(), "changed cells are light yellow"
    assert (block(2, 2)[:3, :3] == WRONG_BG).all() and (block(3, 3)[:3, :3] == WRONG_BG).all(), "red wins"
    assert (block(1, 1) == WHITE).all(), "blanks stay empty"
    ys, xs = np.nonzero((given != WHITE).any(axis=2))
    assert abs((ys.min() + ys.max()) / 2 - 13.5) <= 2 and abs((xs.min() + xs.max()) / 2 - 13.5) <= 2, "centred"


def test_digit_frame_wide_lines_leave_room_between_cells() -> None:
    image = digit_frame(np.array([[1, 0], [0, 2]]), line=12, cell=20)
    layout = grid_layout(2, 20, None, line=12)
    assert image.shape == (3 + 20 + 12 + 20 + 3, 58, 3) == (layout.height, layout.width, 3)
    gap = image[int(layout.tops[0]) : int(layout.tops[0]) + 20, 3 + 20 : 3 + 20 + 12]
    assert (gap == THIN_LINE).all()
    assert layout.lefts.tolist() == [3, 35]


def test_digit_frame_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[N, N\]"):
        digit_frame(np.zeros((3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=">= 0"):
        digit_frame(np.full((2, 2), -1))
    with pytest.raises(ValueError, match="givens"):
        digit_frame(np.zeros((4, 4), dtype=np.int64), np.zeros((9, 9), dtype=bool))
    with pytest.raises(TypeError, match="integers"):
        digit_frame(np.zeros((4, 4)))


def test_sudoku_frame_marks_conflicts_and_overwritten_givens() -> None:
    kind = SudokuKind(4)
    inputs = kind.parse("1...........3...")[0].inputs
    answer = kind.parse("1234341221434321")[0].inputs  # a valid grid, but cell 12 overwrites the given 3 with 4
    image = kind.frame(inputs, answer, inputs)
    wrong_cells = [(r, c) for r in range(4) for c in range(4)
                   if (cell_block(image, 4, r, c, (2, 2))[:3, :3] == WRONG_BG).all()]
    assert wrong_cells == [(3, 0)]
    changed = cell_block(image, 4, 0, 1, (2, 2))
    assert (changed[:3, :3] == CHANGED_BG).all() and count(changed, BLUE) > 10
    assert (cell_block(kind.frame(inputs, inputs, None), 4, 0, 1, (2, 2)) == WHITE).all()

    clash = np.array([3, 3] + [1] * 14)  # tokens: the digit 2 twice in row 1, the rest blank
    image = kind.frame(clash, clash, None)
    assert [(r, c) for r in range(4) for c in range(4)
            if (cell_block(image, 4, r, c, (2, 2))[:3, :3] == WRONG_BG).all()] == [(0, 0), (0, 1)]


# ----------------------------------------------------------------------------------------------------------------
# Colour frames


def test_palettes() -> None:
    assert MAZE_PALETTE.shape == (6, 3) and MAZE_PALETTE.dtype == np.uint8
    assert ARC_PALETTE.shape == (12, 3) and ARC_PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in MAZE_PALETTE}) == 6 and len({tuple(c) for c in ARC_PALETTE}) == 12
    np.testing.assert_array_equal(arc_token_colours(np.array([[0, 1, 2, 11]])), [[10, 11, 0, 9]])
    with pytest.raises(ValueError, match="0..11"):
        arc_token_colours(np.array([12]))


def test_colour_frame_fills_cells_and_grid() -> None:
    colours = np.array([[0, 1, 2], [3, 4, 5]])
    image = colour_frame(colours, MAZE_PALETTE, None)
    assert image.shape == (2 * 13 + 1, 3 * 13 + 1, 3)
    for r in range(2):
        for c in range(3):
            block = image[1 + 13 * r : 13 + 13 * r, 1 + 13 * c : 13 + 13 * c]
            assert (block == MAZE_PALETTE[colours[r, c]]).all(), (r, c)
    for line in (0, 13, 26):
        assert (image[line] == np.array(GRID_LINE, dtype=np.uint8)).all()
        assert (image[:, line] == np.array(GRID_LINE, dtype=np.uint8)).all()


def test_colour_frame_marks_changed_cells_on_every_colour() -> None:
    colours = np.arange(12).reshape(3, 4)
    changed = np.zeros((3, 4), dtype=bool)
    changed[:, ::2] = True
    image = colour_frame(colours, ARC_PALETTE, changed, cell=12)
    for r in range(3):
        for c in range(4):
            y, x = 1 + 13 * r, 1 + 13 * c
            colour = ARC_PALETTE[colours[r, c]]
            assert (image[y + 2 : y + 10, x + 2 : x + 10] == colour).all(), "the centre keeps the palette colour"
            ring = np.concatenate([image[y : y + 2, x : x + 12].reshape(-1, 3),
                                   image[y : y + 12, x : x + 2].reshape(-1, 3)])
            if changed[r, c]:
                mark = np.array(MARK_ALT if colours[r, c] == 6 else MARK, dtype=np.uint8)
                assert (ring == mark).all(), (r, c)
            else:
                assert (ring == colour).all(), (r, c)


def test_maze_frame_shows_the_path_and_marks_new_path_cells() -> None:
    kind = MazeKind(6)
    inputs, labels = kind.generate(1, np.random.default_rng(0))
    image = kind.frame(inputs[0], labels[0], inputs[0])
    cell = max(6, 240 // 6)
    step = cell + 1
    for index in np.flatnonzero(labels[0] == 5):  # path cells: blue, outlined in magenta as they are new
        y, x = 1 + (index // 6) * step, 1 + (index % 6) * step
        assert (image[y + cell // 2, x + cell // 2] == MAZE_PALETTE[5]).all()
        assert (image[y, x : x + cell] == MARK).all()
    start = int(np.flatnonzero(labels[0] == 3)[0])
    y, x = 1 + (start // 6) * step, 1 + (start % 6) * step
    assert (image[y : y + cell, x : x + cell] == MAZE_PALETTE[3]).all(), "unchanged cells are not outlined"


def test_colour_frame_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="0..5"):
        colour_frame(np.array([[6]]), MAZE_PALETTE, None)
    with pytest.raises(ValueError, match="palette"):
        colour_frame(np.array([[0]]), MAZE_PALETTE.astype(np.int64), None)
    with pytest.raises(ValueError, match="changed"):
        colour_frame(np.zeros((2, 2), dtype=np.int64), MAZE_PALETTE, np.zeros((3, 3), dtype=bool))


# ----------------------------------------------------------------------------------------------------------------
# Filmstrip


def test_filmstrip_wraps_rows_with_exact_size_and_placement() -> None:
    frames = [solid(20, 30, (255, 0, 0)), solid(40, 10, (0, 255, 0)), solid(25, 50, (0, 0, 255))]
    captions = ["a", "step 10 q 0.50", ""]
    font = load_font(CAPTION_SIZE)
    slot = max(50, text_size("step 10 q 0.50", font)[0])
    line = text_size("Ag|y", font)[1]
    strip = filmstrip(frames, captions, gap=12, per_row=2)
    row0, row1 = 40 + CAPTION_GAP + line, 25 + CAPTION_GAP + line
    assert strip.shape == (12 + row0 + 12 + row1 + 12, 2 * slot + 3 * 12, 3)
    x0 = 12 + (slot - 30) // 2
    np.testing.assert_array_equal(strip[12:32, x0 : x0 + 30], frames[0])
    assert (strip[32:52, x0 : x0 + 30] == 255).all(), "shorter frames are top-aligned on white"
    x2, y2 = 12 + (slot - 50) // 2, 12 + row0 + 12
    np.testing.assert_array_equal(strip[y2 : y2 + 25, x2 : x2 + 50], frames[2])
    caption = strip[12 + 40 + CAPTION_GAP : 12 + row0, 12 + slot + 12 : 12 + 2 * slot + 12]
    assert (caption < 128).all(axis=2).sum() > 20, "the caption is drawn under the row's tallest frame"
    assert (strip[12 + 20 : 12 + 40, 12 : 12 + slot] == 255).all(), "nothing but white beside the short frame"

    titled = filmstrip(frames, captions, title="Maze", gap=12, per_row=2)
    title_h = text_size("Ag|y", load_font(TITLE_SIZE))[1]
    assert titled.shape == (strip.shape[0] + title_h + 12, strip.shape[1], 3)
    np.testing.assert_array_equal(titled[title_h + 12 :], strip)
    wide = filmstrip(frames, captions, title="x" * 80, per_row=2)
    assert wide.shape[1] == text_size("x" * 80, load_font(TITLE_SIZE))[0] + 24


def test_filmstrip_rejects_bad_input() -> None:
    frame = solid(5, 5, WHITE)
    with pytest.raises(ValueError, match="at least one"):
        filmstrip([], [])
    with pytest.raises(ValueError, match="captions"):
        filmstrip([frame, frame], ["a"])
    with pytest.raises(TypeError, match=r"frames\[1\]"):
        filmstrip([frame, frame.astype(np.float32)], ["a", "b"])
    with pytest.raises(ValueError, match="per_row"):
        filmstrip([frame], ["a"], per_row=0)


def test_sudoku_trace_png_end_to_end(tmp_path: Path) -> None:
    kind = SudokuKind(4)
    inputs, labels = kind.generate(1, np.random.default_rng(0))
    steps = [inputs[0], np.where(np.arange(16) < 8, labels[0], inputs[0]), labels[0]]
    frames = [kind.frame(inputs[0], steps[0], None)]
    frames += [kind.frame(inputs[0], steps[s], steps[s - 1]) for s in (1, 2)]
    strip = filmstrip(frames, ["input", "step 1", "step 2 q 0.91"], title="sudoku #7 (4x4)")
    path = write_png(tmp_path / "trace.png", strip)
    assert read_png_size(path) == (strip.shape[1], strip.shape[0])
    np.testing.assert_array_equal(pixels(path), strip)
    assert count(strip, CHANGED_BG) > 0 and count(strip, WRONG_BG) == 0
