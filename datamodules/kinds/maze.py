"""N x N mazes as a puzzle kind: tokens are the cell codes (0 PAD, 1 wall, 2 open, 3 start, 4 goal, 5 path); the
rules, symmetries and generator live in `datamodules.maze_rules`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from datamodules import maze_rules
from datamodules.dihedral import DIHEDRAL_INVERSE
from datamodules.kinds.base import Inverse, Puzzle, PuzzleKind
from datamodules.kinds.drawing import colour_frame

__all__ = ["MAZE_PALETTE", "MazeKind"]

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

    @classmethod
    def from_shape(cls, seq_len: int, vocab_size: int) -> MazeKind:
        """The N x N maze of a model with N * N positions and the 6 maze tokens."""
        side = math.isqrt(seq_len)
        if side * side != seq_len:
            raise ValueError(f"a maze is a square grid, but the model has {seq_len} positions (not a square number)")
        if vocab_size != 6:
            raise ValueError(f"a maze has 6 tokens (PAD, wall, open, start, goal, path); the model has {vocab_size}")
        return cls(side)

    def generate(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Random mazes whose shortest path has at least N moves, with one shortest path marked (`maze_rules.generate`,
        the generator `GeneratedMaze` uses)."""
        inputs, labels = maze_rules.generate(self.side, count, seed=int(rng.integers(2**63)))
        return inputs.astype(np.int64), labels.astype(np.int64)

    def augment(
        self, inputs: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each row under its own random dihedral transform (rotations and reflections)."""
        gather = maze_rules.dihedral_gather(self.side)[rng.integers(8, size=len(inputs))]  # [B, N * N]
        return np.take_along_axis(inputs, gather, axis=1), np.take_along_axis(labels, gather, axis=1)

    def parse(self, text: str, name: str = "puzzle") -> list[Puzzle]:
        """One maze; refused when it marks path cells already or G cannot be reached from S."""
        grid = maze_rules.parse_maze(text.strip("\n"), self.side)
        if (grid == maze_rules.PATH).any():
            raise ValueError("the maze already marks path cells 'o'; give the maze without its answer")
        maze_rules.check_solvable(grid)
        return [Puzzle(inputs=grid.reshape(-1), name=name)]

    def read_text(self, path: Path, text: str) -> list[Puzzle]:
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
        """The maze in `MAZE_PALETTE` colours, changed cells outlined."""
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
