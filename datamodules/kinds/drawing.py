"""Generic pictures of puzzle grids, drawn with Pillow: the frames of a reasoning trace and the filmstrip of them.

A trace is a filmstrip: the decoded answer after every reasoning step, grids side by side, cells that changed since
the previous step marked, a caption under each grid. Kinds build their frames from the generic builders here and
keep their own colours (`MazeKind`, `ARCKind`) and digit rules (`SudokuKind`):

* ``colour_frame``: a grid of palette colours, changed cells outlined.
* ``digit_frame``: a grid of digits (thick lines around boxes where given), givens black, filled-in digits blue,
  changed cells on light yellow, wrong cells on light red; ``grid_layout`` says where its cells are, so a kind can
  draw more on it (``draw_text``).
* ``filmstrip``: frames in rows of ``per_row`` with captions and an optional title.

Images are numpy ``uint8`` arrays ``[H, W, 3]`` (RGB); ``write_png`` writes one atomically. ``load_font`` and
``text_size`` are the one font helper (the charts of `recursive_reasoning.plot` use them too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from recursive_reasoning.core.files import atomic_write

__all__ = [
    "BLACK",
    "BLUE",
    "CAPTION_SIZE",
    "CHANGED_BG",
    "GRID_LINE",
    "MARK",
    "MARK_ALT",
    "THICK_LINE",
    "THIN_LINE",
    "TITLE_SIZE",
    "WHITE",
    "WRONG_BG",
    "GridLayout",
    "colour_frame",
    "digit_frame",
    "draw_text",
    "filmstrip",
    "grid_layout",
    "load_font",
    "read_png_size",
    "text_size",
    "write_png",
]

Colour = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

WHITE: Colour = (255, 255, 255)
BLACK: Colour = (0, 0, 0)
BLUE: Colour = (30, 90, 200)  # digits the model filled in
CHANGED_BG: Colour = (255, 240, 150)  # light yellow: the cell changed since the previous frame
WRONG_BG: Colour = (255, 190, 190)  # light red: the cell breaks a rule (or disagrees with the answer)
THIN_LINE: Colour = (150, 150, 150)  # between the cells of a digit frame
THICK_LINE: Colour = BLACK  # around the grid and its boxes
GRID_LINE: Colour = (100, 100, 100)  # between the cells of a colour frame
MARK: Colour = (255, 0, 255)  # outline of a changed cell in a colour frame
MARK_ALT: Colour = BLACK  # the outline on cells whose colour is too close to MARK to show it
_MARK_MIN_DISTANCE = 120.0  # RGB distance under which MARK is replaced by MARK_ALT
CAPTION_SIZE = 14  # font size (px) of the captions of a filmstrip
TITLE_SIZE = 16  # and of its title
_LINE_PROBE = "Ag|y"  # a line's full height: ascenders and descenders


# ----------------------------------------------------------------------------------------------------------------
# Files


def _check_image(image: np.ndarray, name: str = "image") -> None:
    """Raise a clear error unless ``image`` is a uint8 [H, W, 3] array with H, W > 0."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(f"{name} must have dtype uint8, got {image.dtype}; convert it with .astype(np.uint8)")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape [H, W, 3] (RGB), got {list(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {list(image.shape)}")


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``image`` (uint8 [H, W, 3], RGB) to ``path`` as a PNG, atomically (`atomic_write`), and return the path;
    missing parent directories are created."""
    _check_image(image)
    picture = Image.fromarray(np.ascontiguousarray(image))
    atomic_write(path, lambda handle: picture.save(handle, format="PNG"))
    return Path(path)


def read_png_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` of a PNG file; ValueError when the file is not a PNG."""
    try:
        with Image.open(path) as picture:
            if picture.format != "PNG":
                raise ValueError(f"{path} is a {picture.format} image, not a PNG")
            return picture.size
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not a PNG file (not an image Pillow can read)") from None


# ----------------------------------------------------------------------------------------------------------------
# Text


@lru_cache(maxsize=None)
def load_font(size: int) -> Font:
    """Pillow's default font at `size` px, or its fixed bitmap font where this Pillow cannot scale it."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError, AttributeError):
        return ImageFont.load_default()


_PROBE = ImageDraw.Draw(Image.new("RGB", (1, 1)))


def text_size(text: str, font: Font) -> tuple[int, int]:
    """Width and height in pixels of `text` drawn from its top-left corner in `font`."""
    left, top, right, bottom = _PROBE.textbbox((0, 0), text, font=font)
    return int(right), int(bottom)


def _line_height(font: Font) -> int:
    """Height in pixels of one line of text in `font` (ascenders to descenders)."""
    return text_size(_LINE_PROBE, font)[1]


def _draw(draw: ImageDraw.ImageDraw, text: str, x: float, y: float, colour: Sequence[int], font: Font,
          centre: bool) -> None:
    """`text` with its line's top-left corner at (x, y), or with its ink centred on (x, y)."""
    if centre:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x, y = x - (left + right) / 2, y - (top + bottom) / 2
    draw.text((x, y), text, font=font, fill=tuple(int(c) for c in colour))


def draw_text(image: np.ndarray, text: str, x: float, y: float, colour: Sequence[int], size: int = CAPTION_SIZE,
              centre: bool = False) -> None:
    """Draw ``text`` onto ``image`` in place, its line's top-left corner at pixel (x, y), or its ink centred on
    (x, y) with ``centre``; ink outside the image is cut."""
    _check_image(image)
    picture = Image.fromarray(image)
    _draw(ImageDraw.Draw(picture), text, x, y, colour, load_font(size), centre)
    image[:] = np.asarray(picture)


@lru_cache(maxsize=None)
def _fit_font(label: str, box: int) -> Font:
    """The largest default font in which the ink of ``label`` fits a ``box`` x ``box`` square."""
    for size in range(2 * box, 5, -1):
        left, top, right, bottom = _PROBE.textbbox((0, 0), label, font=load_font(size))
        if right - left <= box and bottom - top <= box:
            return load_font(size)
    return load_font(6)


# ----------------------------------------------------------------------------------------------------------------
# Frames


def _mask(value: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``value`` as a bool array of ``shape`` (all False when None), with a clear error on a wrong shape."""
    if value is None:
        return np.zeros(shape, dtype=bool)
    value = np.asarray(value)
    if value.shape != shape:
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(value.shape)}")
    return value.astype(bool)


@dataclass(frozen=True)
class GridLayout:
    """Where the cells of a digit frame are: the top pixel of each cell row, the left pixel of each cell column,
    the cell side and the picture's size."""

    tops: np.ndarray
    lefts: np.ndarray
    cell: int
    height: int
    width: int


def _axis(n: int, cell: int, every: int | None, line: int, thick: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One axis of a grid of n cells: cell starts [n], and per pixel its cell (-1 on a line) and whether it lies
    on a thick line (the border, and every `every` cells when given)."""
    gaps = np.arange(n + 1)
    heavy = (gaps == 0) | (gaps == n) | ((gaps % every == 0) if every else False)
    widths = np.where(heavy, thick, line)
    starts = np.cumsum(widths[:n]) + np.arange(n) * cell
    pixels = np.arange(int(widths.sum()) + n * cell)
    index = np.searchsorted(starts, pixels, side="right") - 1
    inside = (index >= 0) & (pixels - starts[index.clip(0)] < cell)
    return starts, np.where(inside, index, -1), ~inside & heavy[index + 1]


def grid_layout(n: int, cell: int = 28, box: tuple[int, int] | None = None, line: int = 1,
                thick: int = 3) -> GridLayout:
    """The layout of an n x n digit frame: ``cell``-px cells, ``line``-px lines between them and ``thick``-px lines
    around the grid and, with ``box`` = (rows, columns), around every box."""
    tops, _, _ = _axis(n, cell, box[0] if box else None, line, thick)
    lefts, _, _ = _axis(n, cell, box[1] if box else None, line, thick)
    height = int(tops[-1]) + cell + thick
    width = int(lefts[-1]) + cell + thick
    return GridLayout(tops=tops, lefts=lefts, cell=cell, height=height, width=width)


def digit_frame(
    digits: np.ndarray,
    givens: np.ndarray | None = None,
    changed: np.ndarray | None = None,
    wrong: np.ndarray | None = None,
    box: tuple[int, int] | None = None,
    cell: int = 28,
    line: int = 1,
) -> np.ndarray:
    """Picture of a grid of digits: int [N, N] (0 blank) -> uint8 [H, W, 3], laid out as ``grid_layout`` says.

    Cells are ``cell`` pixels square on white, ``line``-px grey lines between them, 3-px black lines around the grid
    and around the boxes of ``box`` = (rows, columns) when given. Givens are drawn black, the other digits blue,
    centred and as large as fits. ``changed`` cells get a light yellow background, ``wrong`` cells a light red one
    (red wins where both are set). Kinds with more to show (Futoshiki's inequalities) draw it on the result at the
    positions of ``grid_layout`` with the same arguments (a wider ``line`` leaves room between the cells).
    """
    digits = np.asarray(digits)
    if digits.ndim != 2 or digits.shape[0] != digits.shape[1] or digits.shape[0] == 0:
        raise ValueError(f"digits must have shape [N, N], got {list(digits.shape)}")
    if not np.issubdtype(digits.dtype, np.integer):
        raise TypeError(f"digits must hold integers, got {digits.dtype}")
    if digits.min() < 0:
        raise ValueError(f"digits must be >= 0 (0 blank), got {digits.min()}")
    if cell < 8:
        raise ValueError(f"cell must be >= 8 pixels, got {cell}")
    n = digits.shape[0]
    givens = _mask(givens, digits.shape, "givens")
    background = np.empty((n, n, 3), dtype=np.uint8)
    background[:] = WHITE
    background[_mask(changed, digits.shape, "changed")] = CHANGED_BG
    background[_mask(wrong, digits.shape, "wrong")] = WRONG_BG
    rows, row_cell, row_thick = _axis(n, cell, box[0] if box else None, line, 3)
    cols, col_cell, col_thick = _axis(n, cell, box[1] if box else None, line, 3)
    image = np.empty((len(row_cell), len(col_cell), 3), dtype=np.uint8)
    image[:] = THIN_LINE
    image[row_thick[:, None] | col_thick[None, :]] = THICK_LINE
    inside = (row_cell[:, None] >= 0) & (col_cell[None, :] >= 0)
    image[inside] = background[row_cell[:, None], col_cell[None, :]][inside]

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    pad = max(1, cell // 7)
    for r, c in zip(*np.nonzero(digits)):
        label = str(int(digits[r, c]))
        _draw(draw, label, cols[c] + cell / 2, rows[r] + cell / 2, BLACK if givens[r, c] else BLUE,
              _fit_font(label, cell - 2 * pad), centre=True)
    return np.array(picture)


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
    and a row's captions (``CAPTION_SIZE`` px) sit on one line ``CAPTION_GAP`` pixels under the row's tallest frame.
    ``gap`` pixels separate slots, rows, the title and the picture's edges, so with ``k = min(per_row, len(frames))``
    columns the width is ``k * slot + (k + 1) * gap`` (or the title's width plus ``2 * gap`` if that is wider).
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

    caption_font, title_font = load_font(CAPTION_SIZE), load_font(TITLE_SIZE)
    caption_widths = [text_size(c, caption_font)[0] for c in captions]
    slot = max(max(f.shape[1] for f in frames), max(caption_widths))
    cols = min(per_row, len(frames))
    rows = [list(range(start, min(start + per_row, len(frames)))) for start in range(0, len(frames), per_row)]
    caption_h = _line_height(caption_font)
    row_heights = [max(frames[i].shape[0] for i in row) + CAPTION_GAP + caption_h for row in rows]
    title_h = _line_height(title_font) + gap if title else 0

    width = cols * slot + (cols + 1) * gap
    if title:
        width = max(width, text_size(title, title_font)[0] + 2 * gap)
    height = gap + title_h + sum(row_heights) + (len(rows) - 1) * gap + gap
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    if title:
        _draw(draw, title, gap, gap, BLACK, title_font, centre=False)
    top = gap + title_h
    for row, row_h in zip(rows, row_heights):
        caption_y = top + row_h - caption_h
        for k, i in enumerate(row):
            frame = frames[i]
            left = gap + k * (slot + gap)
            canvas.paste(Image.fromarray(np.ascontiguousarray(frame)), (left + (slot - frame.shape[1]) // 2, top))
            _draw(draw, captions[i], left + (slot - caption_widths[i]) // 2, caption_y, BLACK, caption_font, False)
        top += row_h + gap
    return np.array(canvas)
