"""Lightning datamodules for the puzzle tasks (``datamodules.Sudoku``, ``datamodules.GeneratedSudoku``, ...)."""

from datamodules.sudoku import GeneratedSudoku, Sudoku, SudokuDataModule

__all__ = ["GeneratedSudoku", "Sudoku", "SudokuDataModule"]
