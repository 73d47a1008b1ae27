"""Lightning datamodules for the puzzle tasks (``datamodules.Sudoku``, ``datamodules.Maze``, ``datamodules.ARC``, ...)."""

from datamodules.arc import ARC
from datamodules.generated_puzzles import GeneratedPuzzles
from datamodules.maze import GeneratedMaze, Maze, MazeDataModule
from datamodules.reference_arrays import ReferenceArrays
from datamodules.sudoku import GeneratedSudoku, Sudoku, SudokuDataModule

__all__ = ["ARC"]
__all__ += ["GeneratedSudoku", "Sudoku", "SudokuDataModule"]
__all__ += ["GeneratedMaze", "Maze", "MazeDataModule"]
__all__ += ["ReferenceArrays"]
__all__ += ["GeneratedPuzzles"]
