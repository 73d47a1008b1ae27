"""Sudoku rules in pure numpy: parsing, rule checking, a bitmask solver, a puzzle generator and augmentation.

Grids are integer arrays of shape ``[N, N]`` or flat ``[N * N]`` (row-major) with 0 for a blank cell and 1..N for
digits. Supported sizes are 4x4 (2x2 boxes), 6x6 (boxes of 2 rows x 3 columns) and 9x9 (3x3 boxes). The checkers
take a leading batch axis and are vectorised so they can score model predictions of shape ``[B, N * N]``.
This module has no torch dependency, so it can be used by data preparation, metrics and worker processes alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from datamodules.chunks import map_chunks

__all__ = [
    "SUPPORTED_SIZES",
    "Symmetry",
    "apply_symmetries",
    "apply_symmetry",
    "box_shape",
    "check_givens",
    "conflicts",
    "format_grid",
    "generate",
    "has_unique_solution",
    "is_consistent",
    "is_valid_solution",
    "parse_puzzle",
    "random_symmetry",
    "solve",
    "symmetries_from_keys",
    "symmetry_gather",
    "symmetry_key_count",
    "valid_solutions",
    "violations",
]

_BOX_SHAPES: dict[int, tuple[int, int]] = {4: (2, 2), 6: (2, 3), 9: (3, 3)}
SUPPORTED_SIZES: tuple[int, ...] = tuple(_BOX_SHAPES)
_SIZE_BY_CELLS: dict[int, int] = {n * n: n for n in SUPPORTED_SIZES}
_CHUNK = 32  # puzzles per generation chunk; fixed so results do not depend on the number of workers
_GRID_RULES = str.maketrans("", "", "|+-")  # box separators of format_grid, not cells
_MAX_RESTARTS = 200  # full grids tried for one puzzle before a givens target is declared unreachable


def box_shape(size: int) -> tuple[int, int]:
    """Return the (rows, cols) of one box of an N x N Sudoku, e.g. (2, 3) for 6x6."""
    if size not in _BOX_SHAPES:
        supported = ", ".join(map(str, SUPPORTED_SIZES))
        raise ValueError(f"unsupported Sudoku size {size!r}; supported sizes are {supported}")
    return _BOX_SHAPES[size]


# ----------------------------------------------------------------------------------------------------------------
# Parsing and printing


def parse_puzzle(text: str, size: int | None = None) -> np.ndarray:
    """Parse a puzzle string (digits, '.' or '0' for blanks; whitespace and the box rules '|', '+', '-' of
    `format_grid` ignored, so a printed grid reads back) into a flat int array [N * N]."""
    chars = "".join(str(text).split()).translate(_GRID_RULES)
    n_cells = len(chars)
    if size is None:
        if n_cells not in _SIZE_BY_CELLS:
            expected = ", ".join(f"{n * n} for {n}x{n}" for n in SUPPORTED_SIZES)
            raise ValueError(
                f"puzzle has {n_cells} characters; expected one of {expected} ('.' or '0' for blanks)"
            )
        size = _SIZE_BY_CELLS[n_cells]
    box_shape(size)
    if n_cells != size * size:
        raise ValueError(
            f"puzzle has {n_cells} characters; a {size}x{size} Sudoku needs {size * size} ('.' or '0' for blanks)"
        )
    bad = sorted({c for c in chars if c != "." and not c.isdigit()})
    if bad:
        pos = next(i for i, c in enumerate(chars) if c in bad)
        raise ValueError(
            f"puzzle has invalid character {bad[0]!r} at position {pos}; use digits 1-{size} and '.' or '0' for blanks"
        )
    grid = np.array([0 if c == "." else int(c) for c in chars], dtype=np.int64)
    if grid.max(initial=0) > size:
        pos = int(np.argmax(grid > size))
        raise ValueError(
            f"puzzle has digit {grid[pos]} at position {pos}, out of range for a {size}x{size} Sudoku; "
            f"use digits 1-{size} and '.' or '0' for blanks"
        )
    return grid


def check_givens(grid: np.ndarray) -> None:
    """Refuse a puzzle whose givens already break the rules (a digit twice in a row, column or box): no model can
    solve it, so the error names the unit and the digit.

    Raises:
        ValueError: naming the first repeated digit, its row, column or box (counted from 1) and its cells.
    """
    flat, size, _ = _as_batch(grid)
    units = _units(flat[:1], size)[0]  # [3N, N]: rows, columns, boxes
    counts = (units[..., None] == np.arange(1, size + 1)).sum(axis=1)  # [3N, N digits]
    repeated = np.argwhere(counts > 1)
    if not len(repeated):
        return
    unit, digit = int(repeated[0][0]), int(repeated[0][1]) + 1
    kind, index = ("row", "column", "box")[unit // size], unit % size
    cells = np.flatnonzero(units[unit] == digit)
    if kind == "row":
        where = f"row {index + 1} (columns {', '.join(str(c + 1) for c in cells)})"
    elif kind == "column":
        where = f"column {index + 1} (rows {', '.join(str(r + 1) for r in cells)})"
    else:
        rows, cols = box_shape(size)
        r0, c0 = (index // (size // cols)) * rows, (index % (size // cols)) * cols
        where = f"box {index + 1} (rows {r0 + 1}-{r0 + rows}, columns {c0 + 1}-{c0 + cols})"
    raise ValueError(
        f"the givens break the rules: digit {digit} appears {int(counts[unit, digit - 1])} times in {where}; "
        "no answer can exist, so fix the puzzle (rows, columns and boxes count from 1)"
    )


def format_grid(grid: np.ndarray) -> str:
    """Render one grid as text with box separators ('.' for blanks), for printing and debugging."""
    flat, size, _ = _as_batch(grid)
    if flat.shape[0] != 1:
        raise ValueError(f"format_grid takes one grid, got a batch of {flat.shape[0]}")
    rows, cols = box_shape(size)
    cells = flat[0].reshape(size, size)
    lines = []
    for r in range(size):
        if r and r % rows == 0:
            lines.append("+".join("-" * (2 * cols + 1) for _ in range(size // cols)))
        parts = []
        for c0 in range(0, size, cols):
            parts.append(" " + " ".join("." if v == 0 else str(int(v)) for v in cells[r, c0 : c0 + cols]) + " ")
        lines.append("|".join(parts))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Vectorised rule checking


def _as_batch(grids: Any) -> tuple[np.ndarray, int, bool]:
    """Return (grids as int64 [B, N * N], N, whether the input was a single grid) for [N*N], [N, N] or [..., N*N]."""
    arr = np.asarray(grids)
    if arr.ndim >= 1 and arr.shape[-1] in _SIZE_BY_CELLS:
        size = _SIZE_BY_CELLS[arr.shape[-1]]
        single = arr.ndim == 1
        flat = arr.reshape(-1, size * size)
    elif arr.ndim >= 2 and arr.shape[-1] == arr.shape[-2] and arr.shape[-1] in _BOX_SHAPES:
        size = arr.shape[-1]
        single = arr.ndim == 2
        flat = arr.reshape(-1, size * size)
    else:
        raise ValueError(
            f"cannot read a Sudoku grid from shape {tuple(arr.shape)}; expected [..., N*N] or [..., N, N] "
            f"with N in {SUPPORTED_SIZES}"
        )
    return flat.astype(np.int64, copy=False), size, single


def _units(flat: np.ndarray, size: int) -> np.ndarray:
    """Stack rows, columns and boxes of [B, N * N] grids into [B, 3N, N] (one unit per row of the result)."""
    b = flat.shape[0]
    br, bc = box_shape(size)
    g = flat.reshape(b, size, size)
    boxes = g.reshape(b, size // br, br, size // bc, bc).transpose(0, 1, 3, 2, 4).reshape(b, size, size)
    return np.concatenate([g, g.transpose(0, 2, 1), boxes], axis=1)


def valid_solutions(grids: np.ndarray) -> np.ndarray:
    """Return bool[B]: whether each grid of [B, N * N] is a complete, rule-abiding Sudoku solution (no loop over B)."""
    flat, size, _ = _as_batch(grids)
    units = np.sort(_units(flat, size), axis=-1)
    return (units == np.arange(1, size + 1)).all(axis=(1, 2))


def is_valid_solution(grid: np.ndarray) -> bool | np.ndarray:
    """Return whether a grid is a complete valid solution; a batch [B, N * N] gives bool[B]."""
    flat, _, single = _as_batch(grid)
    result = valid_solutions(flat)
    return bool(result[0]) if single else result


def violations(grid: np.ndarray) -> int | np.ndarray:
    """Count repeated digits over all rows, columns and boxes (blanks ignored); 0 for any consistent (partial) grid."""
    flat, size, single = _as_batch(grid)
    units = _units(flat, size)
    counts = (units[..., None] == np.arange(1, size + 1)).sum(axis=2)
    result = np.clip(counts - 1, 0, None).sum(axis=(1, 2))
    return int(result[0]) if single else result


def conflicts(grids: np.ndarray) -> np.ndarray:
    """Return bool [B, N * N] ([N * N] for one grid): the cells whose digit repeats in their row, column or box
    (blanks never), so a picture can mark them."""
    flat, size, single = _as_batch(grids)
    geo = _Geometry.get(size)
    row, col, box = np.array(geo.row), np.array(geo.col), np.array(geo.box)
    peers = (row[:, None] == row) | (col[:, None] == col) | (box[:, None] == box)
    np.fill_diagonal(peers, False)
    result = ((flat[:, :, None] == flat[:, None, :]) & peers).any(axis=2) & (flat != 0)
    return result[0] if single else result


def is_consistent(puzzle: np.ndarray, grid: np.ndarray) -> bool | np.ndarray:
    """Return whether the grid keeps every given of the puzzle (blanks of the puzzle may hold anything)."""
    p_flat, p_size, p_single = _as_batch(puzzle)
    g_flat, g_size, g_single = _as_batch(grid)
    if p_size != g_size:
        raise ValueError(f"puzzle is {p_size}x{p_size} but grid is {g_size}x{g_size}")
    result = ((p_flat == 0) | (p_flat == g_flat)).all(axis=1)
    return bool(result[0]) if (p_single and g_single) else result


# ----------------------------------------------------------------------------------------------------------------
# Bitmask solver


class _Geometry:
    """Per-size lookup tables for the bitmask solver (digit d is bit d - 1)."""

    _cache: dict[int, _Geometry] = {}

    def __init__(self, size: int) -> None:
        br, bc = box_shape(size)
        self.size = size
        self.n_cells = size * size
        self.full = (1 << size) - 1
        self.row = [i // size for i in range(self.n_cells)]
        self.col = [i % size for i in range(self.n_cells)]
        self.box = [(r // br) * (size // bc) + c // bc for r, c in zip(self.row, self.col)]
        self.pop = [bin(m).count("1") for m in range(1 << size)]
        self.digit = {1 << d: d + 1 for d in range(size)}

    @classmethod
    def get(cls, size: int) -> _Geometry:
        """Return the cached geometry of a size."""
        if size not in cls._cache:
            cls._cache[size] = cls(size)
        return cls._cache[size]


class _Board:
    """Mutable solver state: flat cell list plus used-digit masks per row, column and box."""

    __slots__ = ("geo", "cells", "rows", "cols", "boxes")

    def __init__(self, geo: _Geometry, cells: list[int]) -> None:
        self.geo = geo
        self.cells = cells
        self.rows = [0] * geo.size
        self.cols = [0] * geo.size
        self.boxes = [0] * geo.size

    @classmethod
    def from_cells(cls, geo: _Geometry, cells: list[int]) -> _Board | None:
        """Build a board from givens; None when two givens clash."""
        board = cls(geo, list(cells))
        for i, v in enumerate(cells):
            if v and not board.place(i, v):
                return None
        return board

    def place(self, i: int, v: int) -> bool:
        """Put digit v in cell i; False (and nothing changed) if it clashes."""
        geo = self.geo
        bit = 1 << (v - 1)
        r, c, b = geo.row[i], geo.col[i], geo.box[i]
        if (self.rows[r] | self.cols[c] | self.boxes[b]) & bit:
            return False
        self.rows[r] |= bit
        self.cols[c] |= bit
        self.boxes[b] |= bit
        self.cells[i] = v
        return True

    def clear(self, i: int) -> None:
        """Remove the digit of cell i."""
        geo = self.geo
        bit = 1 << (self.cells[i] - 1)
        self.rows[geo.row[i]] ^= bit
        self.cols[geo.col[i]] ^= bit
        self.boxes[geo.box[i]] ^= bit
        self.cells[i] = 0

    def candidates(self, i: int) -> int:
        """Bitmask of digits cell i could take."""
        geo = self.geo
        return geo.full & ~(self.rows[geo.row[i]] | self.cols[geo.col[i]] | self.boxes[geo.box[i]])

    def search(self, limit: int, out: list[list[int]], rnd: random.Random | None = None) -> None:
        """Depth-first search appending up to `limit` solutions to `out`; the board is left as it was."""
        self._dfs([i for i, v in enumerate(self.cells) if v == 0], limit, out, rnd)

    def _dfs(self, empties: list[int], limit: int, out: list[list[int]], rnd: random.Random | None) -> None:
        """Fill all forced cells (one candidate) in sweeps, then branch on the most constrained cell left."""
        geo = self.geo
        rows, cols, boxes, cells = self.rows, self.cols, self.boxes, self.cells
        grow, gcol, gbox, pop, full, digit = geo.row, geo.col, geo.box, geo.pop, geo.full, geo.digit
        placed: list[int] = []
        best_i, best_m = -1, 0
        ok = True
        while empties:
            rest: list[int] = []
            singles: list[int] = []
            best_n = 99
            for i in empties:
                m = full & ~(rows[grow[i]] | cols[gcol[i]] | boxes[gbox[i]])
                n = pop[m]
                if n == 1:
                    singles.append(i)
                    singles.append(m)
                elif n == 0:
                    ok = False
                    break
                else:
                    rest.append(i)
                    if n < best_n:
                        best_i, best_m, best_n = i, m, n
            if not ok or not singles:
                break
            for k in range(0, len(singles), 2):
                i, bit = singles[k], singles[k + 1]
                r, c, b = grow[i], gcol[i], gbox[i]
                if (rows[r] | cols[c] | boxes[b]) & bit:
                    ok = False
                    break
                rows[r] |= bit
                cols[c] |= bit
                boxes[b] |= bit
                cells[i] = digit[bit]
                placed.append(i)
            if not ok:
                break
            empties = rest
        if ok:
            if not empties:
                out.append(list(cells))
            else:
                rest = [i for i in empties if i != best_i]
                r, c, b = grow[best_i], gcol[best_i], gbox[best_i]
                bits = []
                m = best_m
                while m:
                    bit = m & -m
                    bits.append(bit)
                    m ^= bit
                if rnd is not None:
                    rnd.shuffle(bits)
                for bit in bits:
                    cells[best_i] = digit[bit]
                    rows[r] |= bit
                    cols[c] |= bit
                    boxes[b] |= bit
                    self._dfs(rest, limit, out, rnd)
                    rows[r] ^= bit
                    cols[c] ^= bit
                    boxes[b] ^= bit
                    if len(out) >= limit:
                        break
                cells[best_i] = 0
        for i in placed:
            bit = 1 << (cells[i] - 1)
            rows[grow[i]] ^= bit
            cols[gcol[i]] ^= bit
            boxes[gbox[i]] ^= bit
            cells[i] = 0

    def has_solution_without(self, i: int, v: int) -> bool:
        """Whether the (blank) cell i can take a digit other than v in some completion of the board."""
        others = self.candidates(i) & ~(1 << (v - 1))
        geo = self.geo
        while others:
            bit = others & -others
            others ^= bit
            self.place(i, geo.digit[bit])
            out: list[list[int]] = []
            self.search(1, out)
            self.clear(i)
            if out:
                return True
        return False


def solve(puzzle: np.ndarray, limit: int = 2) -> list[np.ndarray]:
    """Return up to `limit` solutions of a puzzle (shaped like the input); limit=2 tests uniqueness."""
    arr = np.asarray(puzzle)
    flat, size, single = _as_batch(arr)
    if not single:
        raise ValueError(f"solve takes one puzzle, got shape {tuple(arr.shape)}")
    if flat.min() < 0 or flat.max() > size:
        raise ValueError(f"puzzle digits must be 0 (blank) or 1-{size}")
    board = _Board.from_cells(_Geometry.get(size), [int(v) for v in flat[0]])
    if board is None:
        return []
    out: list[list[int]] = []
    board.search(limit, out)
    return [np.array(s, dtype=arr.dtype if arr.dtype.kind in "iu" else np.int64).reshape(arr.shape) for s in out]


def has_unique_solution(puzzle: np.ndarray) -> bool:
    """Return whether the puzzle has exactly one solution."""
    return len(solve(puzzle, limit=2)) == 1


# ----------------------------------------------------------------------------------------------------------------
# Generation


def _random_full_grid(geo: _Geometry, rnd: random.Random) -> list[int]:
    """Fill an empty board by randomised depth-first search."""
    board = _Board(geo, [0] * geo.n_cells)
    out: list[list[int]] = []
    board.search(1, out, rnd)
    return out[0]


def _carve(geo: _Geometry, solution: list[int], givens: int | None, rnd: random.Random) -> list[int] | None:
    """Blank cells of a solution in random order while the puzzle stays unique; None if `givens` is not reached.

    A cell holding v can be blanked iff no completion puts another digit there: any second solution of the
    smaller puzzle must differ from the known one in that cell, so one search for such a completion suffices.
    """
    board = _Board.from_cells(geo, solution)
    assert board is not None
    n_given = geo.n_cells
    order = list(range(geo.n_cells))
    rnd.shuffle(order)
    for i in order:
        if givens is not None and n_given <= givens:
            break
        v = board.cells[i]
        board.clear(i)
        if board.candidates(i) == 1 << (v - 1) or not board.has_solution_without(i, v):
            n_given -= 1
        else:
            board.place(i, v)
    if givens is not None and n_given > givens:
        return None
    return board.cells


def _generate_chunk(args: tuple[int, int | None, int, tuple[int, ...]]) -> tuple[np.ndarray, np.ndarray]:
    """Generate one chunk of puzzles from its own seed (a worker task)."""
    size, givens, count, entropy = args
    geo = _Geometry.get(size)
    state = np.random.SeedSequence(entropy).generate_state(4, dtype=np.uint32)
    rnd = random.Random(int.from_bytes(state.tobytes(), "little"))
    puzzles = np.zeros((count, geo.n_cells), dtype=np.uint8)
    solutions = np.zeros((count, geo.n_cells), dtype=np.uint8)
    for k in range(count):
        for _ in range(_MAX_RESTARTS):
            solution = _random_full_grid(geo, rnd)
            puzzle = _carve(geo, solution, givens, rnd)
            if puzzle is not None:
                break
        else:
            raise ValueError(
                f"could not make a {size}x{size} puzzle with a unique solution and only {givens} givens after "
                f"{_MAX_RESTARTS} random grids; use more givens, or givens=None for minimal puzzles"
            )
        puzzles[k] = puzzle
        solutions[k] = solution
    return puzzles, solutions


def generate(
    size: int,
    count: int,
    givens: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    _entropy: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate `count` puzzles with unique solutions; returns (puzzles, solutions) as uint8 arrays [count, N * N].

    Each puzzle starts from a random full grid (randomised backtracking) and blanks cells in random order, keeping a
    blank only if the solution stays unique. ``givens=None`` makes minimal puzzles: one pass over all cells, after
    which no given can be removed (a removal that fails once fails on every smaller puzzle too). An integer stops as
    soon as that many givens are left; if the pass ends above it, the puzzle is discarded and a new full grid is
    tried (up to 200 times, then ValueError). Work is split into chunks of 32 puzzles, each seeded from
    ``(seed, chunk_index)``, so the result depends only on (size, count, givens, seed), never on `workers`, and
    ``generate(n)`` is a prefix of ``generate(m)`` for ``m > n``.

    Args:
        size: Side of the grid (4, 6 or 9).
        count: Number of puzzles.
        givens: Target number of given cells, or None for minimal puzzles.
        seed: Random seed.
        workers: Processes to use (None = all CPU cores; 1 = in this process).
    """
    box_shape(size)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if givens is not None and not 0 <= givens <= size * size:
        raise ValueError(f"givens must be between 0 and {size * size} for a {size}x{size} Sudoku, got {givens}")
    entropy = (seed,) if _entropy is None else tuple(_entropy)
    tasks = [
        (size, givens, min(_CHUNK, count - start), (*entropy, start // _CHUNK)) for start in range(0, count, _CHUNK)
    ]
    results = map_chunks(_generate_chunk, tasks, workers)
    if not results:
        empty = np.zeros((0, size * size), dtype=np.uint8)
        return empty, empty.copy()
    return np.concatenate([r[0] for r in results]), np.concatenate([r[1] for r in results])


# ----------------------------------------------------------------------------------------------------------------
# Validity-preserving augmentation


@dataclass(frozen=True)
class Symmetry:
    """A validity-preserving Sudoku transform: transpose, then reorder rows and columns, then relabel digits.

    Attributes:
        digit_map: int array [N + 1]; digit d becomes digit_map[d] (digit_map[0] = 0 keeps blanks blank).
        transpose: Whether the grid is transposed first (only for square boxes).
        row_perm: int array [N]; output row k is input row row_perm[k] (bands and rows inside bands permuted).
        col_perm: int array [N]; output column k is input column col_perm[k] (stacks and columns inside stacks).
    """

    digit_map: np.ndarray
    transpose: bool
    row_perm: np.ndarray
    col_perm: np.ndarray


def symmetry_key_count(size: int) -> int:
    """Number of uniform random keys that define one transform of an N x N Sudoku."""
    br, bc = box_shape(size)
    return size + 1 + size // br + size + size // bc + size


def _block_permutations(keys: np.ndarray, size: int, block: int) -> np.ndarray:
    """Turn keys [B, size // block + size] into permutations [B, size]: blocks of lines, then lines inside blocks."""
    n_blocks = size // block
    order = np.argsort(keys[:, :n_blocks], axis=1, kind="stable")
    inner = np.argsort(keys[:, n_blocks:].reshape(-1, n_blocks, block), axis=2, kind="stable")
    inner = np.take_along_axis(inner, order[:, :, None], axis=1)
    return (order[:, :, None] * block + inner).reshape(-1, size)


def symmetries_from_keys(keys: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised transforms from keys [B, symmetry_key_count(size)] in [0, 1).

    Returns:
        digit_maps: int [B, N + 1], digit d becomes digit_maps[b, d] (0 stays 0).
        gather: int [B, N * N], flat output cell k takes input cell gather[b, k] before relabelling.
    """
    br, bc = box_shape(size)
    b = keys.shape[0]
    digit_maps = np.concatenate([np.zeros((b, 1), np.int64), np.argsort(keys[:, :size], axis=1, kind="stable") + 1], 1)
    transpose = (keys[:, size] < 0.5) & (br == bc)
    rows_end = size + 1 + size // br + size
    rows = _block_permutations(keys[:, size + 1 : rows_end], size, br)[:, :, None]
    cols = _block_permutations(keys[:, rows_end:], size, bc)[:, None, :]
    gather = np.where(transpose[:, None, None], cols * size + rows, rows * size + cols).reshape(b, size * size)
    return digit_maps, gather


def apply_symmetries(grids: np.ndarray, digit_maps: np.ndarray, gather: np.ndarray) -> np.ndarray:
    """Grids [B, N * N] (0 blank), each under its own transform of `symmetries_from_keys` (digit_maps [B, N + 1],
    gather [B, N * N]): cells gathered, then digits relabelled; the same transform keeps a puzzle and its solution
    matched."""
    return np.take_along_axis(digit_maps, np.take_along_axis(np.asarray(grids), gather, axis=1), axis=1)


def random_symmetry(rng: np.random.Generator, size: int) -> Symmetry:
    """Draw a random validity-preserving transform of an N x N Sudoku (transpose only when boxes are square)."""
    keys = rng.random((1, symmetry_key_count(size)))
    br, bc = box_shape(size)
    digit_maps, _ = symmetries_from_keys(keys, size)
    rows_end = size + 1 + size // br + size
    return Symmetry(
        digit_map=digit_maps[0],
        transpose=bool(keys[0, size] < 0.5) and br == bc,
        row_perm=_block_permutations(keys[:, size + 1 : rows_end], size, br)[0],
        col_perm=_block_permutations(keys[:, rows_end:], size, bc)[0],
    )


def symmetry_gather(sym: Symmetry) -> np.ndarray:
    """Return int [N * N]: flat output cell k takes input cell gather[k] (before the digit relabelling)."""
    size = len(sym.row_perm)
    rows, cols = sym.row_perm[:, None], sym.col_perm[None, :]
    return (cols * size + rows if sym.transpose else rows * size + cols).reshape(-1)


def apply_symmetry(grid_flat: np.ndarray, sym: Symmetry) -> np.ndarray:
    """Apply a transform to a grid (flat [N * N] or [N, N], shape kept); use the same one for puzzle and solution."""
    arr = np.asarray(grid_flat)
    out = sym.digit_map[arr.reshape(-1)[symmetry_gather(sym)]]
    return out.astype(arr.dtype, copy=False).reshape(arr.shape)
