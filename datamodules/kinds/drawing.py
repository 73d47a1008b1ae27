"""Pictures of a model's reasoning, with no dependency beyond numpy and the standard library.

A trace is a filmstrip: the decoded answer after every reasoning step, grids side by side, cells that changed since
the previous step marked, a caption under each grid. It must render on a headless machine and without plotting or
imaging packages, so this module carries its own PNG encoder (``write_png``: 8-bit RGB, filter 0, zlib) and its own
5x7 bitmap font (``draw_text``).

Images are numpy ``uint8`` arrays of shape ``[H, W, 3]`` (RGB). The frame builders:

* ``sudoku_frame``: a Sudoku grid (boxes by ``box_shape``), givens black, filled-in digits blue, changed cells on
  light yellow, wrong cells on light red.
* ``colour_frame``: a grid of palette colours (``MAZE_PALETTE``, ``ARC_PALETTE``), changed cells outlined.
* ``filmstrip``: frames in rows of ``per_row`` with captions and an optional title.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "ARC_EOS_INDEX",
    "ARC_PAD_INDEX",
    "ARC_PALETTE",
    "BLACK",
    "BLUE",
    "CAPTION_SCALE",
    "CHANGED_BG",
    "FONT",
    "GLYPH_HEIGHT",
    "GLYPH_WIDTH",
    "MARK",
    "MARK_ALT",
    "MAZE_PALETTE",
    "TITLE_SCALE",
    "WHITE",
    "WRONG_BG",
    "arc_token_colours",
    "box_shape",
    "colour_frame",
    "draw_text",
    "filmstrip",
    "read_png_size",
    "sudoku_frame",
    "text_height",
    "text_width",
    "write_png",
]

Colour = tuple[int, int, int]

WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)
BLUE: Colour = (30, 90, 200)  # digits the model filled in
CHANGED_BG: Colour = (255, 240, 150)  # light yellow: the cell changed since the previous frame
WRONG_BG: Colour = (255, 190, 190)  # light red: the cell breaks a rule (or disagrees with the answer)
THIN_LINE: Colour = (150, 150, 150)
THICK_LINE: Colour = BLACK
GRID_LINE: Colour = (100, 100, 100)  # between the cells of a colour frame
MARK: Colour = (255, 0, 255)  # outline of a changed cell in a colour frame
MARK_ALT: Colour = BLACK  # the outline on cells whose colour is too close to MARK to show it
_MARK_MIN_DISTANCE = 120.0  # RGB distance under which MARK is replaced by MARK_ALT

MAZE_PALETTE = np.array(
    [
        (200, 200, 200),  # 0 PAD: grey
        (30, 30, 30),  # 1 wall: near-black
        (255, 255, 255),  # 2 open: white
        (46, 204, 64),  # 3 start S: green
        (255, 65, 54),  # 4 goal G: red
        (0, 116, 217),  # 5 path: blue
    ],
    dtype=np.uint8,
)
"""Colours of the maze tokens, indexed by token: 0 PAD, 1 wall, 2 open, 3 start, 4 goal, 5 path."""

ARC_PALETTE = np.array(
    [
        (0, 0, 0),  # 0 black
        (0, 116, 217),  # 1 blue
        (255, 65, 54),  # 2 red
        (46, 204, 64),  # 3 green
        (255, 220, 0),  # 4 yellow
        (170, 170, 170),  # 5 grey
        (240, 18, 190),  # 6 magenta / fuchsia
        (255, 133, 27),  # 7 orange
        (127, 219, 255),  # 8 light blue / teal
        (135, 12, 37),  # 9 maroon
        (220, 220, 220),  # 10 PAD: light grey
        (80, 80, 80),  # 11 EOS: dark grey
    ],
    dtype=np.uint8,
)
"""The ARC viewer colours: indices 0..9 are the ARC colours 0..9, index 10 is PAD and 11 is EOS.

Note the layout differs from the model's ARC tokens (0 PAD, 1 EOS, 2 + c colour c); ``arc_token_colours`` maps
tokens to these indices."""

ARC_PAD_INDEX = 10
ARC_EOS_INDEX = 11


def arc_token_colours(tokens: np.ndarray) -> np.ndarray:
    """Map ARC tokens (0 PAD, 1 EOS, 2 + c colour c) to ``ARC_PALETTE`` indices, so token grids can be drawn too."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() > 11):
        raise ValueError(f"ARC tokens must lie in 0..11, got {tokens.min()}..{tokens.max()}")
    lut = np.array([ARC_PAD_INDEX, ARC_EOS_INDEX, *range(10)], dtype=np.int64)
    return lut[tokens.astype(np.int64)]


# ----------------------------------------------------------------------------------------------------------------
# PNG


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_image(image: np.ndarray, name: str = "image") -> None:
    """Raise a clear error unless ``image`` is a uint8 [H, W, 3] array with H, W > 0."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape [H, W, 3] (RGB), got {list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {list(image.shape)}")


def _chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data and the CRC-32 of type + data."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encode_png(image: np.ndarray) -> bytes:
    """The bytes of an 8-bit RGB PNG of ``image``: every row with filter 0 (none), one zlib-compressed IDAT."""
    height, width = image.shape[:2]
    rows = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 0] = 0
    rows[:, 1:] = image.reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # depth 8, colour type 2 (RGB)
    return (
        _PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` (uint8 [H, W, 3], RGB) to ``path`` as a PNG and return the path.

    The file is written to a temporary file in the same directory and moved into place with ``os.replace``, so a
    reader never sees a half-written picture. Missing parent directories are created.
    """
    _check_image(image)
    data = _encode_png(image)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_png_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of a PNG file, read from its IHDR chunk after checking the PNG signature."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE:
        raise ValueError(f"{path} is not a PNG file (bad signature)")
    if head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a valid PNG file (the first chunk is not IHDR)")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


# ----------------------------------------------------------------------------------------------------------------
# Bitmap font


GLYPH_WIDTH, GLYPH_HEIGHT = 5, 7
_ADVANCE = GLYPH_WIDTH + 1  # one blank column between glyphs

# Each glyph is 7 rows of 5 columns, "#" ink and "." blank. Lower-case letters are drawn with the upper-case glyphs;
# characters without a glyph are drawn as "?".
_GLYPH_ROWS: dict[str, tuple[str, ...]] = {
    " ": (".....", ".....", ".....", ".....", ".....", ".....", "....."),
    "0": (".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."),
    "1": ("..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "2": (".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"),
    "3": ("#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."),
    "4": ("...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."),
    "5": ("#####", "#....", "####.", "....#", "....#", "#...#", ".###."),
    "6": ("..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."),
    "7": ("#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."),
    "8": (".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."),
    "9": (".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."),
    "A": (".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "B": ("####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."),
    "C": (".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."),
    "D": ("###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "F": ("#####", "#....", "#....", "####.", "#....", "#....", "#...."),
    "G": (".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"),
    "H": ("#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"),
    "I": (".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."),
    "J": ("..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."),
    "K": ("#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"),
    "L": ("#....", "#....", "#....", "#....", "#....", "#....", "#####"),
    "M": ("#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"),
    "N": ("#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"),
    "O": (".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "P": ("####.", "#...#", "#...#", "####.", "#....", "#....", "#...."),
    "Q": (".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"),
    "R": ("####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "U": ("#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."),
    "V": ("#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."),
    "W": ("#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."),
    "X": ("#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"),
    "Y": ("#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."),
    "Z": ("#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"),
    ".": (".....", ".....", ".....", ".....", ".....", ".##..", ".##.."),
    ",": (".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."),
    ":": (".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."),
    "=": (".....", ".....", "#####", ".....", "#####", ".....", "....."),
    "%": ("##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"),
    "+": (".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."),
    "-": (".....", ".....", ".....", "#####", ".....", ".....", "....."),
    "/": (".....", "....#", "...#.", "..#..", ".#...", "#....", "....."),
    "(": ("...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."),
    ")": (".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."),
    "[": (".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."),
    "]": (".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."),
    "#": (".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."),
    "?": (".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."),
    "!": ("..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."),
    "@": (".###.", "#...#", "#.###", "#.#.#", "#.###", "#....", ".###."),
    ">": (".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."),
    "<": ("...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."),
    "*": (".....", "#.#.#", ".###.", "#####", ".###.", "#.#.#", "....."),
    "'": ("..#..", "..#..", ".#...", ".....", ".....", ".....", "....."),
    "|": ("..#..", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "_": (".....", ".....", ".....", ".....", ".....", ".....", "#####"),
}


def _compile_font(rows: dict[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    """Turn the glyph strings into bool [7, 5] masks, checking every glyph's size."""
    font = {}
    for char, glyph in rows.items():
        if len(glyph) != GLYPH_HEIGHT or any(len(row) != GLYPH_WIDTH for row in glyph):
            raise ValueError(f"glyph {char!r} is not {GLYPH_WIDTH}x{GLYPH_HEIGHT}")
        font[char] = np.array([[c == "#" for c in row] for row in glyph], dtype=bool)
    return font


FONT = _compile_font(_GLYPH_ROWS)


def _glyph(char: str) -> np.ndarray:
    """The mask of one character: lower case drawn as upper case, unknown characters as "?"."""
    return FONT.get(char.upper(), FONT["?"])


def text_width(text: str, scale: int = 1) -> int:
    """Width in pixels of ``text`` drawn at ``scale``: 5 columns per glyph, 1 blank column between glyphs."""
    if not text:
        return 0
    return (_ADVANCE * len(text) - 1) * scale


def text_height(scale: int = 1) -> int:
    """Height in pixels of a line of text drawn at ``scale``."""
    return GLYPH_HEIGHT * scale


def draw_text(image: np.ndarray, text: str, x: int, y: int, colour: Sequence[int], scale: int = 1) -> None:
    """Draw ``text`` onto ``image`` in place, its top-left corner at pixel ``(x, y)``; ink outside the image is cut."""
    _check_image(image)
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    rgb = np.asarray(colour, dtype=np.int64)
    if rgb.shape != (3,) or rgb.min() < 0 or rgb.max() > 255:
        raise ValueError(f"colour must be three values in 0..255, got {colour!r}")
    height, width = image.shape[:2]
    for i, char in enumerate(text):
        mask = _glyph(char).repeat(scale, axis=0).repeat(scale, axis=1)
        gx, gy = x + i * _ADVANCE * scale, y
        x0, y0 = max(gx, 0), max(gy, 0)
        x1, y1 = min(gx + mask.shape[1], width), min(gy + mask.shape[0], height)
        if x0 >= x1 or y0 >= y1:
            continue
        image[y0:y1, x0:x1][mask[y0 - gy : y1 - gy, x0 - gx : x1 - gx]] = rgb


def _fit_scale(label: str, box: int) -> int:
    """The largest font scale at which ``label`` fits in a ``box`` x ``box`` square (at least 1)."""
    scale = 1
    while text_width(label, scale + 1) <= box and text_height(scale + 1) <= box:
        scale += 1
    return scale


# ----------------------------------------------------------------------------------------------------------------
# Frames


def box_shape(n: int) -> tuple[int, int]:
    """``(rows, columns)`` of a Sudoku box for an N x N grid: rows is the largest divisor of N <= sqrt(N)."""
    if n < 1:
        raise ValueError(f"grid size must be >= 1, got {n}")
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def _line_layout(n: int, cell: int, thick_every: int, thin: int, thick: int) -> tuple[np.ndarray, list[int], int]:
    """Cell starts, line widths (n + 1 of them) and total length of one axis of a grid with n cells."""
    widths = [thick if i % thick_every == 0 else thin for i in range(n + 1)]
    starts = np.array([sum(widths[: i + 1]) + i * cell for i in range(n)], dtype=np.int64)
    return starts, widths, sum(widths) + n * cell


def _mask(value: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``value`` as a bool array of ``shape`` (all False when None), with a clear error on a wrong shape."""
    if value is None:
        return np.zeros(shape, dtype=bool)
    value = np.asarray(value)
    if value.shape != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(value.shape)}")
    return value.astype(bool)


def sudoku_frame(
    grid: np.ndarray,
    givens: np.ndarray,
    changed: np.ndarray | None,
    wrong: np.ndarray | None = None,
    cell: int = 28,
) -> np.ndarray:
    """Picture of a Sudoku grid: int [N, N] digits 0..N (0 blank) -> uint8 [H, W, 3].

    Cells are ``cell`` pixels square, separated by 1-px grey lines, with 3-px black lines around the boxes
    (``box_shape(N)``) and the grid. Givens are drawn black, the other digits blue, centred and as large as fits.
    ``changed`` cells get a light yellow background, ``wrong`` cells a light red one (red wins where both are set).
    The size is ``N * cell + 3 * (N / columns + 1) + (N - N / columns)`` wide and likewise high with rows.
    """
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.shape[0] != grid.shape[1] or grid.shape[0] == 0:
        raise ValueError(f"grid must have shape [N, N], got {list(grid.shape)}")
    if not np.issubdtype(grid.dtype, np.integer):
        raise TypeError(f"grid must hold integers, got {grid.dtype}")
    n = grid.shape[0]
    if grid.min() < 0 or grid.max() > n:
        raise ValueError(f"grid values must lie in 0..{n}, got {grid.min()}..{grid.max()}")
    if cell < 8:
        raise ValueError(f"cell must be >= 8 pixels, got {cell}")
    givens = _mask(givens, grid.shape, "givens")
    changed = _mask(changed, grid.shape, "changed")
    wrong = _mask(wrong, grid.shape, "wrong")
    box_rows, box_cols = box_shape(n)
    thin, thick = 1, 3
    ys, row_lines, height = _line_layout(n, cell, box_rows, thin, thick)
    xs, col_lines, width = _line_layout(n, cell, box_cols, thin, thick)

    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = THIN_LINE
    for i, w in enumerate(row_lines):
        if w == thick:
            top = int(ys[i]) - thick if i < n else height - thick
            image[top : top + thick, :] = THICK_LINE
    for j, w in enumerate(col_lines):
        if w == thick:
            left = int(xs[j]) - thick if j < n else width - thick
            image[:, left : left + thick] = THICK_LINE

    pad = max(1, cell // 14)  # margin around a digit: 2 px at cell 28, so digits there are drawn at scale 3
    for r in range(n):
        for c in range(n):
            y, x = int(ys[r]), int(xs[c])
            background = WRONG_BG if wrong[r, c] else CHANGED_BG if changed[r, c] else WHITE
            image[y : y + cell, x : x + cell] = background
            value = int(grid[r, c])
            if value == 0:
                continue
            label = str(value)
            scale = _fit_scale(label, cell - 2 * pad)
            tx = x + (cell - text_width(label, scale)) // 2
            ty = y + (cell - text_height(scale)) // 2
            draw_text(image, label, tx, ty, BLACK if givens[r, c] else BLUE, scale)
    return image


def _mark_colour(rgb: np.ndarray) -> Colour:
    """The changed-cell outline colour for a cell of colour ``rgb``: MARK unless that is too close to it."""
    distance = float(np.linalg.norm(rgb.astype(np.float64) - np.array(MARK, dtype=np.float64)))
    return MARK if distance >= _MARK_MIN_DISTANCE else MARK_ALT


def colour_frame(
    colours: np.ndarray,
    palette: np.ndarray,
    changed: np.ndarray | None,
    cell: int = 12,
) -> np.ndarray:
    """Picture of a grid of palette indices: int [H, W] in 0..K-1 -> uint8 [H * (cell + 1) + 1, W * (cell + 1) + 1, 3].

    Each cell is filled with ``palette[colour]`` inside a 1-px grey grid (border included). ``changed`` cells get a
    2-px outline just inside the cell (1 px for cells under 6 px) in magenta, or black on colours near magenta, so
    the mark shows on every palette colour while the cell's centre keeps its own colour.
    """
    colours = np.asarray(colours)
    if colours.ndim != 2 or colours.shape[0] == 0 or colours.shape[1] == 0:
        raise ValueError(f"colours must have shape [H, W], got {list(colours.shape)}")
    if not np.issubdtype(colours.dtype, np.integer):
        raise TypeError(f"colours must hold integers, got {colours.dtype}")
    palette = np.asarray(palette)
    if palette.dtype != np.uint8 or palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] == 0:
        raise ValueError(f"palette must be uint8 [K, 3], got {palette.dtype} {list(palette.shape)}")
    if colours.min() < 0 or colours.max() >= len(palette):
        raise ValueError(f"colours must lie in 0..{len(palette) - 1}, got {colours.min()}..{colours.max()}")
    if cell < 3:
        raise ValueError(f"cell must be >= 3 pixels, got {cell}")
    changed = _mask(changed, colours.shape, "changed")
    rows, cols = colours.shape
    step = cell + 1
    image = np.empty((rows * step + 1, cols * step + 1, 3), dtype=np.uint8)
    image[:] = GRID_LINE
    # Cells first, all at once: view the interior as [rows, step, cols, step] blocks and fill the cell x cell part.
    blocks = image[1:, 1:].reshape(rows, step, cols, step, 3)
    blocks[:, :cell, :, :cell] = palette[colours.astype(np.int64)][:, None, :, None, :]
    border = 2 if cell >= 6 else 1
    for r, c in zip(*np.nonzero(changed)):
        y, x = 1 + int(r) * step, 1 + int(c) * step
        mark = _mark_colour(palette[colours[r, c]])
        box = image[y : y + cell, x : x + cell]
        box[:border, :] = mark
        box[-border:, :] = mark
        box[:, :border] = mark
        box[:, -border:] = mark
    return image


# ----------------------------------------------------------------------------------------------------------------
# Filmstrip


CAPTION_SCALE = 2
TITLE_SCALE = 2
CAPTION_GAP = 4  # pixels between the tallest frame of a row and the row's captions


def filmstrip(
    frames: list[np.ndarray],
    captions: list[str],
    title: str | None = None,
    gap: int = 12,
    per_row: int = 8,
) -> np.ndarray:
    """Frames side by side on white, ``per_row`` to a row, each with its caption under it and an optional title.

    Every slot is as wide as the widest frame or caption; a frame is centred in its slot and aligned at the row's top,
    and a row's captions (font scale 2) sit on one line ``CAPTION_GAP`` pixels under the row's tallest frame. ``gap``
    pixels separate slots, rows, the title and the picture's edges. So with ``k = min(per_row, len(frames))``
    columns the width is ``k * slot + (k + 1) * gap`` (or the title's width plus ``2 * gap`` if that is wider) and the
    height is ``gap + [14 + gap] + sum(row frame height + 4 + 14) + (rows - 1) * gap + gap``.
    """
    if not frames:
        raise ValueError("filmstrip needs at least one frame")
    if len(captions) != len(frames):
        raise ValueError(f"got {len(frames)} frames but {len(captions)} captions")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap}")
    if per_row < 1:
        raise ValueError(f"per_row must be >= 1, got {per_row}")
    for i, frame in enumerate(frames):
        _check_image(frame, f"frames[{i}]")

    slot = max(max(f.shape[1] for f in frames), max(text_width(c, CAPTION_SCALE) for c in captions))
    cols = min(per_row, len(frames))
    rows = [list(range(start, min(start + per_row, len(frames)))) for start in range(0, len(frames), per_row)]
    caption_h = text_height(CAPTION_SCALE)
    row_heights = [max(frames[i].shape[0] for i in row) + CAPTION_GAP + caption_h for row in rows]
    title_h = text_height(TITLE_SCALE) + gap if title else 0

    width = cols * slot + (cols + 1) * gap
    if title:
        width = max(width, text_width(title, TITLE_SCALE) + 2 * gap)
    height = gap + title_h + sum(row_heights) + (len(rows) - 1) * gap + gap
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = WHITE
    if title:
        draw_text(image, title, gap, gap, BLACK, TITLE_SCALE)

    top = gap + title_h
    for row, row_h in zip(rows, row_heights):
        caption_y = top + row_h - caption_h
        for k, i in enumerate(row):
            frame = frames[i]
            left = gap + k * (slot + gap)
            x = left + (slot - frame.shape[1]) // 2
            image[top : top + frame.shape[0], x : x + frame.shape[1]] = frame
            cx = left + (slot - text_width(captions[i], CAPTION_SCALE)) // 2
            draw_text(image, captions[i], cx, caption_y, BLACK, CAPTION_SCALE)
        top += row_h + gap
    return image
