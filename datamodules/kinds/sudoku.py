"""N x N Sudoku as a puzzle kind: tokens 0 PAD, 1 blank, 2..N+1 the digits 1..N; the rules, symmetries and
generator live in `datamodules.sudoku_rules`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules import sudoku_rules
from datamodules.kinds.base import REPORT_LINE, Inverse, Puzzle, PuzzleKind

__all__ = ["SudokuKind"]


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

    def parse(self, text: str, name: str = "puzzle") -> list[Puzzle]:
        """One puzzle: a digit string or a printed grid; refused when its givens already break the rules."""
        grid = sudoku_rules.parse_puzzle(text, self.size)
        sudoku_rules.check_givens(grid)
        return [Puzzle(inputs=grid + 1, name=name)]

    def _read_text(self, path: Path, text: str) -> list[Puzzle]:
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
        kept = (inputs <= 1) | (inputs == grid + 1)
        if not kept.all():
            raise ValueError(f"the solution changes the given at position {int(np.argmin(kept))}; check the row")
        return grid + 1

    def compact(self, tokens: np.ndarray) -> str:
        return "".join("." if d == 0 else str(int(d)) for d in np.clip(np.asarray(tokens) - 1, 0, None))

    def text(self, inputs: np.ndarray, tokens: np.ndarray) -> str:
        return sudoku_rules.format_grid(np.clip(np.asarray(tokens) - 1, 0, None))

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """A complete valid solution that keeps every given."""
        puzzles, grids = np.clip(inputs - 1, 0, None), np.clip(predictions - 1, 0, None)
        return sudoku_rules.valid_solutions(grids) & sudoku_rules.is_consistent(puzzles, grids)

    def frame(self, inputs: np.ndarray, tokens: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        from datamodules.kinds.drawing import sudoku_frame

        n = self.size
        grid = np.clip(np.asarray(tokens) - 1, 0, None).reshape(n, n)
        givens = (np.asarray(inputs) > 1).reshape(n, n)
        changed = None if previous is None else (np.asarray(previous) != tokens).reshape(n, n)
        return sudoku_frame(grid, givens, changed, wrong=_sudoku_conflicts(grid))

    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """Validity-preserving symmetries (digit relabelling, transpose, band / row / stack / column orders)."""
        size, cells = self.size, self.size * self.size
        keys = rng.random((copies, sudoku_rules.symmetry_key_count(size)))
        digit_maps, gather = sudoku_rules.symmetries_from_keys(keys, size)
        digit_maps[0], gather[0] = np.arange(size + 1), np.arange(cells)
        grids = np.clip(inputs - 1, 0, None)  # [B, L]
        moved = np.stack([digit_maps[p][grids[:, gather[p]]] for p in range(copies)])
        inverse_gather = np.argsort(gather, axis=1)
        inverse_maps = np.argsort(digit_maps, axis=1)

        def inverse(answers: np.ndarray) -> np.ndarray:
            digits = np.clip(answers - 1, 0, None)
            back = np.stack([inverse_maps[p][digits[p][:, inverse_gather[p]]] for p in range(copies)])
            return back + 1

        return moved + 1, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), inverse

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
            digit = (tokens >= 2) & (tokens <= n + 1)  # tokens 2..N+1 are the digits 1..N
            return np.where(digit, (tokens - 2 + by) % n + 2, tokens)

        def inverse(answers: np.ndarray) -> np.ndarray:
            return shifted(answers, -shifts)

        moved = shifted(np.broadcast_to(inputs, (copies, *inputs.shape)), shifts)
        return moved, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), inverse


def _sudoku_conflicts(grid: np.ndarray) -> np.ndarray:
    """Cells [N, N] whose digit repeats in their row, column or box."""
    n = grid.shape[0]
    rows, cols = sudoku_rules.box_shape(n)
    conflict = np.zeros_like(grid, dtype=bool)
    for r in range(n):
        for c in range(n):
            d = grid[r, c]
            if d == 0:
                continue
            r0, c0 = r - r % rows, c - c % cols
            box = grid[r0 : r0 + rows, c0 : c0 + cols]
            conflict[r, c] = (grid[r] == d).sum() > 1 or (grid[:, c] == d).sum() > 1 or (box == d).sum() > 1
    return conflict
