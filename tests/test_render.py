"""Tests of datamodules.kinds.drawing: PNG encoding, the bitmap font, Sudoku / colour frames and the filmstrip."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from datamodules.kinds import drawing as render
from datamodules.kinds.drawing import (
    ARC_PALETTE,
    BLACK,
    BLUE,
    CHANGED_BG,
    GRID_LINE,
    MARK,
    MARK_ALT,
    MAZE_PALETTE,
    WHITE,
    WRONG_BG,
    arc_token_colours,
    box_shape,
    colour_frame,
    draw_text,
    filmstrip,
    read_png_size,
    sudoku_frame,
    text_width,
    write_png,
)


def decode_png(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB, filter-0 PNG independently of the encoder: chunks, CRCs, zlib, rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    kinds = [kind for kind, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour_type, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour_type, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all(), "every row must use filter 0"
    return rows[:, 1:].reshape(height, width, 3)


def ink_box(image: np.ndarray, background: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) exclusive bounds of the pixels that differ from ``background``."""
    ys, xs = np.nonzero((image != np.array(background, dtype=np.uint8)).any(axis=2))
    return int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1


def solid(height: int, width: int, colour: tuple[int, int, int]) -> np.ndarray:
    """A uint8 [height, width, 3] image of one colour."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = colour
    return image


# ----------------------------------------------------------------------------------------------------------------
# PNG


@pytest.mark.parametrize("shape", [(1, 1, 3), (17, 23, 3), (64, 5, 3)])
def test_png_round_trip_exact_pixels(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    path = write_png(tmp_path / "x.png", image)
    assert path == tmp_path / "x.png"
    np.testing.assert_array_equal(decode_png(path.read_bytes()), image)


def test_png_non_contiguous_view_round_trips(tmp_path: Path) -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(12, 20, 3), dtype=np.uint8)[::2, ::3]
    np.testing.assert_array_equal(decode_png(write_png(tmp_path / "v.png", image).read_bytes()), image)


def test_read_png_size(tmp_path: Path) -> None:
    path = write_png(tmp_path / "s.png", np.zeros((37, 101, 3), dtype=np.uint8))
    assert read_png_size(path) == (101, 37)
    assert read_png_size(str(path)) == (101, 37)


def test_read_png_size_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "not.png").write_bytes(b"GIF89a" + bytes(30))
    with pytest.raises(ValueError, match="signature"):
        read_png_size(tmp_path / "not.png")
    (tmp_path / "short.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError):
        read_png_size(tmp_path / "short.png")


def test_write_png_overwrites_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "t.png"
    write_png(target, np.zeros((2, 2, 3), dtype=np.uint8))
    image = np.full((3, 4, 3), 200, dtype=np.uint8)
    write_png(target, image)
    assert sorted(p.name for p in target.parent.iterdir()) == ["t.png"]
    np.testing.assert_array_equal(decode_png(target.read_bytes()), image)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), TypeError, "uint8"),
        (np.zeros((4, 4, 3), dtype=np.int64), TypeError, "uint8"),
        (np.zeros((4, 4), dtype=np.uint8), ValueError, r"\[H, W, 3\]"),
        (np.zeros((4, 4, 4), dtype=np.uint8), ValueError, r"\[H, W, 3\]"),
        (np.zeros((0, 4, 3), dtype=np.uint8), ValueError, "empty"),
        ([[[0, 0, 0]]], TypeError, "numpy array"),
    ],
)
def test_write_png_rejects_bad_images(tmp_path: Path, image: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        write_png(tmp_path / "bad.png", image)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# Font


REQUIRED_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ .,:=%+-/()#?@>_"


def test_font_covers_required_characters_with_5x7_glyphs() -> None:
    for char in REQUIRED_CHARS:
        assert char in render.FONT, char
    for char, glyph in render.FONT.items():
        assert glyph.shape == (7, 5) and glyph.dtype == bool, char
        assert glyph.any() or char == " ", f"glyph {char!r} is blank"
    glyphs = {char: glyph.tobytes() for char, glyph in render.FONT.items()}
    assert len(set(glyphs.values())) == len(glyphs), "two characters share a glyph"


@pytest.mark.parametrize(("text", "scale", "width"), [("", 1, 0), ("A", 1, 5), ("AB", 1, 11), ("step 3", 2, 70)])
def test_text_width(text: str, scale: int, width: int) -> None:
    assert text_width(text, scale) == width


def test_draw_text_single_glyph_exact() -> None:
    image = solid(12, 10, WHITE)
    draw_text(image, "A", 2, 3, BLACK)
    ink = (image == 0).all(axis=2)
    expected = np.zeros((12, 10), dtype=bool)
    expected[3:10, 2:7] = render.FONT["A"]
    np.testing.assert_array_equal(ink, expected)
    assert ((image == 255).all(axis=2) | ink).all()


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_draw_text_ink_spans_text_width(scale: int) -> None:
    image = solid(40, 200, WHITE)
    draw_text(image, "HELLO", 4, 5, (10, 20, 30), scale)
    top, left, bottom, right = ink_box(image, WHITE)
    assert (top, left) == (5, 4)
    assert right - left == text_width("HELLO", scale)
    assert bottom - top == 7 * scale
    assert set(map(tuple, image.reshape(-1, 3))) == {WHITE, (10, 20, 30)}


def test_draw_text_lower_case_and_unknown_characters() -> None:
    upper, lower = solid(9, 40, WHITE), solid(9, 40, WHITE)
    draw_text(upper, "MAZE Q", 1, 1, BLACK)
    draw_text(lower, "maze q", 1, 1, BLACK)
    np.testing.assert_array_equal(upper, lower)
    unknown, question = solid(9, 8, WHITE), solid(9, 8, WHITE)
    draw_text(unknown, "~", 1, 1, BLACK)
    draw_text(question, "?", 1, 1, BLACK)
    np.testing.assert_array_equal(unknown, question)


def test_draw_text_clips_at_the_edges() -> None:
    image = solid(10, 10, WHITE)
    draw_text(image, "8888", -3, -2, BLACK, scale=2)
    assert (image == 0).any()
    draw_text(image, "X", 50, 50, BLACK)
    with pytest.raises(ValueError, match="scale"):
        draw_text(image, "X", 0, 0, BLACK, scale=0)
    with pytest.raises(ValueError, match="colour"):
        draw_text(image, "X", 0, 0, (0, 0, 256))


# ----------------------------------------------------------------------------------------------------------------
# Sudoku frames


@pytest.mark.parametrize(
    ("n", "shape"), [(1, (1, 1)), (4, (2, 2)), (6, (2, 3)), (9, (3, 3)), (12, (3, 4)), (16, (4, 4))]
)
def test_box_shape(n: int, shape: tuple[int, int]) -> None:
    assert box_shape(n) == shape


@pytest.mark.parametrize(
    ("n", "height", "width"),
    [
        (4, 4 * 28 + 3 * 3 + 2, 4 * 28 + 3 * 3 + 2),  # 2x2 boxes: 3 thick + 2 thin lines each way
        (6, 6 * 28 + 4 * 3 + 3, 6 * 28 + 3 * 3 + 4),  # 2 rows x 3 columns: 4 thick rows lines, 3 thick column lines
        (9, 9 * 28 + 4 * 3 + 6, 9 * 28 + 4 * 3 + 6),
    ],
)
def test_sudoku_frame_size(n: int, height: int, width: int) -> None:
    grid = np.zeros((n, n), dtype=np.int64)
    image = sudoku_frame(grid, grid > 0, None)
    assert image.shape == (height, width, 3) and image.dtype == np.uint8


# Cell starts of a 4x4 frame at cell 28: lines 3 (thick), 1, 3, 1, 3 wide.
STARTS_4 = [3, 32, 63, 92]


def cell_of(image: np.ndarray, r: int, c: int, starts: list[int] = STARTS_4, cell: int = 28) -> np.ndarray:
    return image[starts[r] : starts[r] + cell, starts[c] : starts[c] + cell]


def sudoku_4() -> tuple[np.ndarray, np.ndarray]:
    grid = np.array([[4, 0, 0, 1], [0, 0, 4, 0], [0, 1, 0, 0], [1, 0, 0, 2]])
    givens = np.zeros((4, 4), dtype=bool)
    givens[0, 0] = givens[3, 3] = True
    return grid, givens


def test_sudoku_frame_lines() -> None:
    grid, givens = sudoku_4()
    image = sudoku_frame(grid, givens, None)
    for y in (0, 1, 2, 60, 61, 62, 120, 121, 122):  # thick lines: edges and the box boundary
        assert (image[y] == 0).all()
        assert (image[:, y] == 0).all()
    for y in (31, 91):  # thin lines, grey away from the thick lines
        np.testing.assert_array_equal(image[y, 3:31], np.full((28, 3), render.THIN_LINE, dtype=np.uint8))


def test_sudoku_frame_digits_and_blanks() -> None:
    grid, givens = sudoku_4()
    image = sudoku_frame(grid, givens, None)
    given = cell_of(image, 0, 0)
    assert (given == 0).all(axis=2).sum() > 20, "a given digit is drawn in black"
    top, left, bottom, right = ink_box(given, WHITE)
    assert bottom - top == 21 and right - left == 15, "scale 3 at cell 28"
    assert abs(top - (28 - bottom)) <= 1 and abs(left - (28 - right)) <= 1, "the digit is centred"
    filled = cell_of(image, 1, 2)
    assert (filled == np.array(BLUE, dtype=np.uint8)).all(axis=2).sum() > 20
    assert not (filled == 0).all(axis=2).any(), "a filled-in digit is blue, not black"
    for r, c in [(0, 1), (1, 1), (2, 3)]:
        assert (cell_of(image, r, c) == 255).all(), "a blank cell is all background"


def test_sudoku_frame_same_digit_same_shape_in_both_colours() -> None:
    grid, givens = sudoku_4()
    image = sudoku_frame(grid, givens, None)
    given_four = (cell_of(image, 0, 0) != 255).any(axis=2)
    filled_four = (cell_of(image, 1, 2) != 255).any(axis=2)
    np.testing.assert_array_equal(given_four, filled_four)


def test_sudoku_frame_changed_and_wrong_backgrounds() -> None:
    grid, givens = sudoku_4()
    changed = np.zeros((4, 4), dtype=bool)
    wrong = np.zeros((4, 4), dtype=bool)
    changed[1, 2] = changed[0, 1] = changed[2, 1] = True
    wrong[2, 1] = wrong[3, 0] = True
    image = sudoku_frame(grid, givens, changed, wrong)
    for r in range(4):
        for c in range(4):
            expected = WRONG_BG if wrong[r, c] else CHANGED_BG if changed[r, c] else WHITE
            assert tuple(cell_of(image, r, c)[1, 1]) == expected, (r, c)
    assert (cell_of(image, 0, 1) == np.array(CHANGED_BG, dtype=np.uint8)).all(), "a changed blank stays empty"
    plain = sudoku_frame(grid, givens, None)
    ink_changed = (cell_of(image, 1, 2) == np.array(BLUE, dtype=np.uint8)).all(axis=2)
    ink_plain = (cell_of(plain, 1, 2) == np.array(BLUE, dtype=np.uint8)).all(axis=2)
    np.testing.assert_array_equal(ink_changed, ink_plain)


def test_sudoku_frame_9x9_cells() -> None:
    grid = np.zeros((9, 9), dtype=np.int64)
    grid[4, 7] = 9
    givens = grid > 0
    image = sudoku_frame(grid, givens, None)
    starts = [3, 32, 61, 92, 121, 150, 181, 210, 239]  # thick lines before rows 0, 3, 6
    assert (cell_of(image, 4, 7, starts) == 0).all(axis=2).any()
    assert (cell_of(image, 4, 6, starts) == 255).all() and (cell_of(image, 8, 8, starts) == 255).all()
    assert starts[-1] + 28 + 3 == image.shape[0]


def test_sudoku_frame_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[N, N\]"):
        sudoku_frame(np.zeros((4, 5), dtype=np.int64), np.zeros((4, 5), dtype=bool), None)
    with pytest.raises(ValueError, match="0..4"):
        sudoku_frame(np.full((4, 4), 5), np.zeros((4, 4), dtype=bool), None)
    with pytest.raises(ValueError, match="givens"):
        sudoku_frame(np.zeros((4, 4), dtype=np.int64), np.zeros((9, 9), dtype=bool), None)
    with pytest.raises(TypeError, match="integers"):
        sudoku_frame(np.zeros((4, 4)), np.zeros((4, 4), dtype=bool), None)


# ----------------------------------------------------------------------------------------------------------------
# Colour frames


def test_palettes() -> None:
    assert MAZE_PALETTE.shape == (6, 3) and MAZE_PALETTE.dtype == np.uint8
    assert ARC_PALETTE.shape == (12, 3) and ARC_PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in MAZE_PALETTE}) == 6 and len({tuple(c) for c in ARC_PALETTE}) == 12
    assert tuple(ARC_PALETTE[0]) == (0, 0, 0)
    np.testing.assert_array_equal(arc_token_colours(np.array([[0, 1, 2, 11]])), [[10, 11, 0, 9]])
    with pytest.raises(ValueError):
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
            assert (image[y + 6, x + 6] == colour).all(), "the centre keeps the palette colour"
            assert (image[y + 2 : y + 10, x + 2 : x + 10] == colour).all()
            ring = np.concatenate(
                [image[y : y + 2, x : x + 12].reshape(-1, 3), image[y : y + 12, x : x + 2].reshape(-1, 3)]
            )
            if changed[r, c]:
                mark = np.array(MARK_ALT if colours[r, c] == 6 else MARK, dtype=np.uint8)
                assert (ring == mark).all(), (r, c)
                assert np.linalg.norm(mark.astype(float) - colour.astype(float)) > 100, "the mark must stand out"
            else:
                assert (ring == colour).all(), (r, c)


def test_colour_frame_mark_contrasts_with_every_palette_colour() -> None:
    for palette in (MAZE_PALETTE, ARC_PALETTE):
        for k in range(len(palette)):
            image = colour_frame(np.array([[k]]), palette, np.array([[True]]))
            mark, fill = image[1, 1].astype(float), palette[k].astype(float)
            assert np.linalg.norm(mark - fill) > 100, (k, mark, fill)


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
    captions = ["a", "step 10", ""]
    slot = text_width("step 10", 2)  # 82, wider than every frame
    strip = filmstrip(frames, captions, gap=12, per_row=2)
    row0, row1 = 40 + 4 + 14, 25 + 4 + 14
    assert strip.shape == (12 + row0 + 12 + row1 + 12, 2 * slot + 3 * 12, 3)
    x0 = 12 + (slot - 30) // 2
    np.testing.assert_array_equal(strip[12:32, x0 : x0 + 30], frames[0])
    assert (strip[32:52, x0 : x0 + 30] == 255).all(), "shorter frames are top-aligned on white"
    x2, y2 = 12 + (slot - 50) // 2, 12 + row0 + 12
    np.testing.assert_array_equal(strip[y2 : y2 + 25, x2 : x2 + 50], frames[2])
    caption = strip[12 + 40 + 4 : 12 + 40 + 4 + 14, 12 + slot + 12 : 12 + 2 * slot + 12]
    assert (caption == 0).all(axis=2).any(), "the caption is drawn under the tallest frame"

    titled = filmstrip(frames, captions, title="Maze", gap=12, per_row=2)
    assert titled.shape == (strip.shape[0] + 14 + 12, strip.shape[1], 3)
    np.testing.assert_array_equal(titled[14 + 12 :], strip)
    wide = filmstrip(frames, captions, title="x" * 40, per_row=2)
    assert wide.shape[1] == text_width("x" * 40, 2) + 24


def test_filmstrip_sudoku_trace_size() -> None:
    n, cell = 6, 28
    grid = np.zeros((n, n), dtype=np.int64)
    frames = [sudoku_frame(grid, grid > 0, None, cell=cell) for _ in range(8)]
    assert frames[0].shape == (183, 181, 3)
    captions = [f"step {i + 1}" for i in range(8)]
    assert filmstrip(frames, captions).shape == (12 + 183 + 4 + 14 + 12, 8 * 181 + 9 * 12, 3)
    assert filmstrip(frames, captions, title="sudoku 6x6").shape == (12 + 14 + 12 + 201 + 12, 1556, 3)
    nine = filmstrip([*frames, frames[0]], [*captions, "final"])
    assert nine.shape == (12 + 201 + 12 + 201 + 12, 1556, 3)


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


def test_trace_png_end_to_end(tmp_path: Path) -> None:
    grids = [np.array([[1, 0, 0, 4], [0, 0, 1, 0], [0, 1, 0, 0], [4, 0, 0, 2]]), np.arange(16).reshape(4, 4) % 5]
    givens = grids[0] > 0
    frames = [sudoku_frame(grids[0], givens, None), sudoku_frame(grids[1], givens, grids[1] != grids[0])]
    strip = filmstrip(frames, ["step 1", "q 0.91"], title="Trace: sudoku #7 (4x4)")
    path = write_png(tmp_path / "trace.png", strip)
    assert read_png_size(path) == (strip.shape[1], strip.shape[0])
    np.testing.assert_array_equal(decode_png(path.read_bytes()), strip)
