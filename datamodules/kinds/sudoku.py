"""N x N Sudoku as a puzzle kind: tokens 0 PAD, 1 blank, 2..N+1 the digits 1..N (`encode` / `decode`, the one
place that says so); the rules, symmetries, solver and generator live in `datamodules.sudoku_rules`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from datamodules import sudoku_rules
from datamodules.kinds.base import REPORT_LINE, Inverse, Puzzle, PuzzleKind
from datamodules.kinds.drawing import digit_frame

__all__ = ["BLANK", "PAD", "SudokuKind", "decode", "encode"]

PAD, BLANK = 0, 1
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def encode(grids: ArrayT) -> ArrayT:
    """Grids (0 blank, 1..N digits) as tokens (1 blank, 2..N+1 digits); numpy or torch in, same type out."""
    return grids + 1


def decode(tokens: ArrayT) -> ArrayT:
    """Tokens back to grids (0 blank, 1..N digits), PAD decoding to blank; numpy or torch in, same type out."""
    if isinstance(tokens, torch.Tensor):
        return (tokens - 1).clamp_min(0)
    return np.clip(np.asarray(tokens) - 1, 0, None)


class SudokuKind(PuzzleKind):
    """N x N Sudoku: text of N*N digits with '.' or '0' for blanks; tokens 1 blank, 2..N+1 digits."""

    name = "sudoku"

    def __init__(self, size: int) -> None:
        sudoku_rules.box_shape(size)
        self.size = size

    @property
    def vocab_size(self) -> int:
        """PAD, blank and the N digits."""
        return self.size + 2

    @property
    def seq_len(self) -> int:
        return self.size * self.size

    def init_args(self) -> dict[str, Any]:
        return {"size": self.size}

    @classmethod
    def from_shape(cls, seq_len: int, vocab_size: int) -> SudokuKind:
        """The N x N Sudoku of a model with N * N positions and at least N + 2 tokens."""
        side = math.isqrt(seq_len)
        if side * side != seq_len:
            raise ValueError(f"a Sudoku is a square grid, but the model has {seq_len} positions (not a square number)")
        if vocab_size < side + 2:
            raise ValueError(f"a {side}x{side} Sudoku needs {side + 2} tokens (PAD, blank, {side} digits); the model "
                             f"has {vocab_size}")
        return cls(side)

    def generate(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Minimal puzzles with unique solutions (`sudoku_rules.generate`, as `GeneratedSudoku` makes them)."""
        puzzles, solutions = sudoku_rules.generate(self.size, count, seed=int(rng.integers(2**63)))
        return encode(puzzles.astype(np.int64)), encode(solutions.astype(np.int64))

    def augment(
        self, inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row under its own random digit relabelling, transpose and band / row / stack / column orders."""
        keys = rng.random((len(inputs), sudoku_rules.symmetry_key_count(self.size)))
        digit_maps, gather = sudoku_rules.symmetries_from_keys(keys, self.size)
        moved_inputs = sudoku_rules.apply_symmetries(decode(np.asarray(inputs)), digit_maps, gather)
        moved_labels = sudoku_rules.apply_symmetries(decode(np.asarray(labels)), digit_maps, gather)
        return encode(moved_inputs), encode(moved_labels)

    def count_solutions(self, inputs: np.ndarray, limit: int = 2) -> np.ndarray:
        """Solutions of each puzzle [B, N * N], counted up to `limit` by the bitmask solver (`sudoku_rules.solve`)."""
        return np.array([len(sudoku_rules.solve(grid, limit)) for grid in decode(np.asarray(inputs))], dtype=np.int64)

    def parse(self, text: str, name: str = "puzzle") -> list[Puzzle]:
        """One puzzle: a digit string or a printed grid; refused when its givens already break the rules."""
        grid = sudoku_rules.parse_puzzle(text, self.size)
        sudoku_rules.check_givens(grid)
        return [Puzzle(inputs=encode(grid), name=name)]

    def read_text(self, path: Path, text: str) -> list[Puzzle]:
        """One puzzle per line, or a grid of N lines of N cells as `rr solve` prints it (box rules and its report
        lines, e.g. 'rule checker: fails', skipped, so its text output reads back); blank lines and '#' comments
        skipped."""
        n, puzzles, rows, first = self.size, [], [], 0
        for number, raw in enumerate([*text.splitlines(), ""], 1):
            line = raw.strip()
            if not line or line.startswith("#") or REPORT_LINE.match(line):
                if rows:
                    raise ValueError(f"{path}:{first}: a grid of {len(rows)} rows; a {n}x{n} Sudoku needs {n} rows "
                                     f"of {n} cells ('.' for blanks), or all {n * n} cells on one line")
                continue
            cells = sum(c.isdigit() or c == "." for c in line)
            if cells == 0 and not line.strip("-+| "):
                continue  # a box rule of a printed grid
            if cells == n:
                first, rows = first if rows else number, [*rows, line]
                if len(rows) == n:
                    puzzles.extend(self._parse_at(path, first, "".join(rows)))
                    rows = []
                continue
            puzzles.extend(self._parse_at(path, number, line))
        return puzzles

    def parse_answer(self, text: str, inputs: np.ndarray) -> np.ndarray:
        """A complete solution keeping the puzzle's givens."""
        grid = sudoku_rules.parse_puzzle(text, self.size)
        blank = np.flatnonzero(grid == 0)
        if blank.size:
            raise ValueError(f"the solution has a blank at position {int(blank[0])}; give the complete solution")
        kept = (inputs <= BLANK) | (inputs == encode(grid))
        if not kept.all():
            raise ValueError(f"the solution changes the given at position {int(np.argmin(kept))}; check the row")
        return encode(grid)

    def compact(self, tokens: np.ndarray) -> str:
        return "".join("." if d == 0 else str(int(d)) for d in decode(np.asarray(tokens)))

    def text(self, inputs: np.ndarray, tokens: np.ndarray) -> str:
        return sudoku_rules.format_grid(decode(np.asarray(tokens)))

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """A complete valid solution that keeps every given."""
        puzzles, grids = decode(np.asarray(inputs)), decode(np.asarray(predictions))
        return sudoku_rules.valid_solutions(grids) & sudoku_rules.is_consistent(puzzles, grids)

    def frame(self, inputs: np.ndarray, tokens: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """The grid with its boxes, givens black, filled digits blue; changed cells yellow, and red where a digit
        repeats in its row, column or box or overwrites a given."""
        n, inputs, tokens = self.size, np.asarray(inputs), np.asarray(tokens)
        grid, puzzle = decode(tokens), decode(inputs)
        givens = inputs > BLANK
        wrong = sudoku_rules.conflicts(grid) | (givens & (grid != puzzle))
        changed = None if previous is None else (np.asarray(previous) != tokens).reshape(n, n)
        return digit_frame(grid.reshape(n, n), givens.reshape(n, n), changed, wrong.reshape(n, n),
                           box=sudoku_rules.box_shape(n))

    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """Validity-preserving symmetries (digit relabelling, transpose, band / row / stack / column orders), one per
        copy for the whole batch; the draws depend only on `copies`."""
        size, cells, batch = self.size, self.size * self.size, len(inputs)
        keys = rng.random((copies, sudoku_rules.symmetry_key_count(size)))
        digit_maps, gather = sudoku_rules.symmetries_from_keys(keys, size)
        digit_maps[0], gather[0] = np.arange(size + 1), np.arange(cells)
        inverse_maps, inverse_gather = np.argsort(digit_maps, axis=1), np.argsort(gather, axis=1)

        def moved(grids: np.ndarray, maps: np.ndarray, order: np.ndarray) -> np.ndarray:
            """Copy p of grids [P, B, L] under maps[p] and order[p], all copies at once."""
            flat = sudoku_rules.apply_symmetries(grids.reshape(copies * batch, cells), np.repeat(maps, batch, axis=0),
                                                 np.repeat(order, batch, axis=0))
            return flat.reshape(copies, batch, cells)

        def inverse(answers: np.ndarray) -> np.ndarray:
            return encode(moved(decode(np.asarray(answers)), inverse_maps, inverse_gather))

        grids = np.broadcast_to(decode(np.asarray(inputs)), (copies, batch, cells))
        ids = np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy()
        return encode(moved(grids, digit_maps, gather)), ids, inverse

    def reference_perturbations(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """Copy k shifts every digit cyclically by k: d -> (d - 1 + k) mod N + 1, blanks kept (k = 0..copies-1).

        A relabelling of the digits, so a valid puzzle stays valid and its solution shifts with it; shifting back by
        -k inverts it. Augmented HRM votes over the 9 shifts of a 9x9 Sudoku.
        """
        n = self.size
        if copies > n:
            raise ValueError(f"a {n}x{n} Sudoku has {n} cyclic digit shifts; asked for {copies} copies")
        shifts = np.arange(copies).reshape(-1, 1, 1)

        def shifted(tokens: np.ndarray, by: np.ndarray) -> np.ndarray:
            digit = (tokens > BLANK) & (tokens <= n + 1)  # tokens 2..N+1 are the digits 1..N
            return np.where(digit, encode((decode(tokens) - 1 + by) % n + 1), tokens)

        def inverse(answers: np.ndarray) -> np.ndarray:
            return shifted(answers, -shifts)

        moved = shifted(np.broadcast_to(inputs, (copies, *inputs.shape)), shifts)
        return moved, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), inverse

