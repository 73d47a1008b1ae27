"""Puzzle kinds: each one module that declares its tokens, reading and writing, rule checker, symmetries, drawing
and generator (see docs/puzzles.md). Found by class path, so a kind outside this package works the same."""

from datamodules.kinds.arc import ARCKind
from datamodules.kinds.base import Puzzle, PuzzleKind, kind_from_description, read_puzzle_text
from datamodules.kinds.futoshiki import FutoshikiKind
from datamodules.kinds.maze import MazeKind
from datamodules.kinds.sudoku import SudokuKind

__all__ = ["ARCKind", "MazeKind", "Puzzle", "PuzzleKind", "SudokuKind", "kind_from_description", "read_puzzle_text"]
__all__ += ["FutoshikiKind"]
