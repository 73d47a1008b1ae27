"""N x N mazes as a puzzle kind: tokens are the cell codes (0 PAD, 1 wall, 2 open, 3 start, 4 goal, 5 path); the
rules, symmetries and generator live in `datamodules.maze_rules`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datamodules import maze_rules
from datamodules.dihedral import DIHEDRAL_INVERSE
from datamodules.kinds.base import Inverse, Puzzle, PuzzleKind

__all__ = ["MazeKind"]


class MazeKind(PuzzleKind):
    """N x N maze: text of '# SG' (N lines of N characters, or N*N in a row); tokens are the cell codes."""

    name = "maze"

    def __init__(self, side: int) -> None:
        self.side = side

    @property
    def vocab_size(self) -> int:
        """PAD, wall, open, start, goal, path."""
        return 6

    @property
    def seq_len(self) -> int:
        return self.side * self.side

    def init_args(self) -> dict[str, Any]:
        return {"side": self.side}

    def parse(self, text: str, name: str = "puzzle") -> list[Puzzle]:
        """One maze; refused when it marks path cells already or G cannot be reached from S."""
        grid = maze_rules.parse_maze(text.strip("\n"), self.side)
        if (grid == maze_rules.PATH).any():
            raise ValueError("the maze already marks path cells 'o'; give the maze without its answer")
        maze_rules.check_solvable(grid)
        return [Puzzle(inputs=grid.reshape(-1), name=name)]

    def _read_text(self, path: Path, text: str) -> list[Puzzle]:
        """Mazes separated by blank lines (each N lines of N characters), or one N*N-character maze per line."""
        blocks = [b for b in text.replace("\r\n", "\n").split("\n\n") if b.strip("\n")]
        text_blocks = [line for b in blocks for line in ([b] if "\n" in b.strip("\n") else b.split("\n")) if line]
        puzzles = []
        for i, block in enumerate(text_blocks):
            try:
                puzzles.extend(self.parse(block, name=f"{path.name}#{i}"))
            except ValueError as err:
                raise ValueError(f"{path}: maze {i}: {err}") from None
        return puzzles

    def parse_answer(self, text: str, inputs: np.ndarray) -> np.ndarray:
        """The maze with its shortest path marked 'o', on the puzzle's walls."""
        codes = maze_rules.parse_maze(text.strip("\n"), self.side).reshape(-1)
        kept = (codes == inputs) | ((codes == maze_rules.PATH) & (inputs == maze_rules.OPEN))
        if not kept.all():
            cell = int(np.argmin(kept))
            raise ValueError(f"the answer differs from its maze at row {cell // self.side}, column {cell % self.side} "
                             "(only open cells may become path 'o'); check the row")
        return codes

    def compact(self, tokens: np.ndarray) -> str:
        return maze_rules.format_maze(np.clip(np.asarray(tokens), maze_rules.WALL, maze_rules.PATH))

    def text(self, inputs: np.ndarray, tokens: np.ndarray) -> str:
        codes = np.clip(np.asarray(tokens), maze_rules.WALL, maze_rules.PATH)
        return maze_rules.format_maze(codes, lines=True)

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        """The prediction marks a shortest S -> G path of its maze."""
        return maze_rules.valid_paths(inputs, predictions)

    def frame(self, inputs: np.ndarray, tokens: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        from datamodules.kinds.drawing import MAZE_PALETTE, colour_frame

        n = self.side
        changed = None if previous is None else (np.asarray(previous) != tokens).reshape(n, n)
        return colour_frame(np.asarray(tokens).reshape(n, n), MAZE_PALETTE, changed, cell=max(6, 240 // n))

    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """The dihedral transforms, in order (at most 8 distinct copies)."""
        if copies > 8:
            raise ValueError(f"a maze has 8 dihedral transforms; asked for {copies} copies")
        gather = maze_rules.dihedral_gather(self.side)
        moved = np.stack([inputs[:, gather[p]] for p in range(copies)])

        def inverse(answers: np.ndarray) -> np.ndarray:
            return np.stack([answers[p][:, gather[DIHEDRAL_INVERSE[p]]] for p in range(copies)])

        return moved, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), inverse

    def reference_perturbations(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """Copy 1 swaps start and goal (Augmented HRM's maze perturbation): the same shortest paths, so the same
        answer with S and G swapped back; the swap is its own inverse."""
        if copies > 2:
            raise ValueError(f"a maze has 2 reference perturbations (itself, start/goal swapped); asked for {copies}")
        swap = np.arange(copies).reshape(-1, 1, 1) == 1

        def swapped(tokens: np.ndarray) -> np.ndarray:
            flipped = np.where(tokens == maze_rules.START, maze_rules.GOAL,
                               np.where(tokens == maze_rules.GOAL, maze_rules.START, tokens))
            return np.where(swap, flipped, tokens)

        moved = swapped(np.broadcast_to(inputs, (copies, *inputs.shape)))
        return moved, np.broadcast_to(puzzle_ids, (copies, *puzzle_ids.shape)).copy(), swapped
