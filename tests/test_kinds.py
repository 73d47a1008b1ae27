"""The built-in puzzle kinds pass the kind conformance checks, the checks catch broken kinds, and the kinds' own
contract pieces (from_shape, generate, augment, count_solutions, the token encoding) do what they say."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datamodules import maze_rules, sudoku_rules
from datamodules.kinds import ARCKind, MazeKind, SudokuKind
from datamodules.kinds.base import Inverse, PuzzleKind
from datamodules.kinds.conformance import check_datamodule, check_kind
from datamodules.kinds.sudoku import decode, encode
from datamodules.maze import GeneratedMaze
from datamodules.sudoku import GeneratedSudoku

ARC_TASK = {
    "train": [
        {"input": [[1, 0], [0, 0]], "output": [[0, 1], [0, 0]]},
        {"input": [[0, 0, 2], [0, 0, 0]], "output": [[2, 0, 0], [0, 0, 0]]},
    ],
    "test": [
        {"input": [[3, 0, 0], [0, 4, 0]], "output": [[0, 0, 3], [0, 4, 0]]},
        {"input": [[5, 6], [7, 8], [9, 1]], "output": [[6, 5], [8, 7], [1, 9]]},
    ],
}


@pytest.mark.parametrize("kind", [SudokuKind(4), SudokuKind(6), MazeKind(8)], ids=["sudoku4", "sudoku6", "maze8"])
def test_generating_kinds_conform(kind: PuzzleKind) -> None:
    check_kind(kind, count=6, seed=1)


def test_arc_conforms_on_a_parsed_task() -> None:
    kind = ARCKind()
    puzzles = kind.parse(json.dumps(ARC_TASK), name="flip")
    assert [p.name for p in puzzles] == ["flip[0]", "flip[1]"]
    check_kind(kind, puzzles=puzzles)


def test_a_kind_without_generator_needs_puzzles() -> None:
    with pytest.raises(ValueError, match="puzzles="):
        check_kind(ARCKind())


class WrongInverse(SudokuKind):
    """A Sudoku whose transforms' inverse forgets to undo the digit relabelling."""

    def transforms(self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, Inverse]:
        moved, ids, _ = super().transforms(inputs, puzzle_ids, copies, rng)
        return moved, ids, lambda answers: answers


class AcceptsAnything(SudokuKind):
    """A Sudoku whose rule checker passes every answer."""

    def check(self, inputs: np.ndarray, predictions: np.ndarray) -> np.ndarray:
        return np.ones(len(predictions), dtype=bool)


class BreaksRules(SudokuKind):
    """A Sudoku whose augment moves the labels but not the inputs."""

    def augment(self, inputs: np.ndarray, labels: np.ndarray,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return inputs, super().augment(inputs, labels, rng)[1]


@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        (WrongInverse(4), "inverse"),
        (AcceptsAnything(4), "check accepts a label with a cell the answer fills in changed"),
        (BreaksRules(4), "augment breaks the rules"),
    ],
    ids=["wrong-inverse", "accepts-anything", "augment-breaks-rules"],
)
def test_broken_kinds_fail_naming_the_rule(kind: PuzzleKind, rule: str) -> None:
    with pytest.raises(AssertionError, match=rule):
        check_kind(kind, count=4)


@pytest.mark.parametrize(
    "module",
    [
        GeneratedSudoku(size=4, train_size=16, val_size=8, test_size=8, augmentations=2, batch_size=8,
                        cache_dir=None, hints=True),
        GeneratedMaze(side=6, min_path=6, train_size=16, val_size=8, test_size=8, batch_size=8, cache_dir=None),
    ],
    ids=["sudoku", "maze"],
)
def test_generated_datamodules_conform(module) -> None:
    check_datamodule(module)


class Mislabelled(GeneratedSudoku):
    """4x4 Sudoku data that claims to hold 5x5 mazes."""

    @property
    def puzzle_kind(self) -> MazeKind:
        return MazeKind(5)


def test_datamodule_whose_kind_disagrees_fails() -> None:
    module = Mislabelled(size=4, train_size=8, val_size=8, test_size=8, batch_size=8, cache_dir=None)
    with pytest.raises(AssertionError, match="has vocab_size 6 and seq_len 25, the data module 6 and 16"):
        check_datamodule(module)


# ----------------------------------------------------------------------------------------------------------------
# The contract pieces


def test_sudoku_encoding_numpy_and_torch() -> None:
    grid = np.array([0, 1, 5, 9])
    np.testing.assert_array_equal(encode(grid), [1, 2, 6, 10])
    np.testing.assert_array_equal(decode(encode(grid)), grid)
    tokens = torch.tensor([0, 1, 2, 10])
    assert decode(tokens).tolist() == [0, 0, 1, 9] and isinstance(decode(tokens), torch.Tensor)


def test_from_shape() -> None:
    assert SudokuKind.from_shape(36, 8).size == 6
    assert SudokuKind.from_shape(81, 11).describe() == SudokuKind(9).describe()
    assert MazeKind.from_shape(900, 6).side == 30
    assert isinstance(ARCKind.from_shape(900, 12), ARCKind)
    with pytest.raises(ValueError, match="needs 11 tokens"):
        SudokuKind.from_shape(81, 10)
    with pytest.raises(ValueError, match="not a square"):
        SudokuKind.from_shape(80, 11)
    with pytest.raises(ValueError, match="unsupported Sudoku size 5"):
        SudokuKind.from_shape(25, 7)
    with pytest.raises(ValueError, match="6 tokens"):
        MazeKind.from_shape(100, 11)
    with pytest.raises(ValueError, match="900 positions"):
        ARCKind.from_shape(81, 12)


def test_sudoku_generate_is_seeded_and_unique() -> None:
    kind = SudokuKind(4)
    first = kind.generate(5, np.random.default_rng(3))
    again = kind.generate(5, np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    inputs, labels = first
    assert inputs.shape == labels.shape == (5, 16) and inputs.dtype == np.int64
    assert kind.count_solutions(inputs).tolist() == [1] * 5
    assert (sudoku_rules.valid_solutions(decode(labels))).all()


def test_sudoku_count_solutions_sees_ambiguity() -> None:
    kind = SudokuKind(4)
    empty = np.ones((2, 16), dtype=np.int64)  # all blank: 288 solutions
    assert kind.count_solutions(empty, limit=2).tolist() == [2, 2]
    assert kind.count_solutions(empty[:1], limit=5).tolist() == [5]
    assert MazeKind(4).count_solutions(np.ones((1, 16), dtype=np.int64)) is None


def test_sudoku_augment_moves_each_row_its_own_way() -> None:
    kind = SudokuKind(6)
    inputs, labels = kind.generate(1, np.random.default_rng(0))
    inputs, labels = np.repeat(inputs, 6, axis=0), np.repeat(labels, 6, axis=0)
    moved_inputs, moved_labels = kind.augment(inputs, labels, np.random.default_rng(1))
    assert kind.check(moved_inputs, moved_labels).all()
    assert len({row.tobytes() for row in moved_labels}) > 1  # rows drew different symmetries
    np.testing.assert_array_equal((moved_inputs == 1).sum(axis=1), (inputs == 1).sum(axis=1))  # blanks kept


def test_maze_augment_is_a_dihedral_transform_per_row() -> None:
    kind = MazeKind(6)
    inputs, labels = kind.generate(1, np.random.default_rng(0))
    inputs, labels = np.repeat(inputs, 16, axis=0), np.repeat(labels, 16, axis=0)
    moved_inputs, moved_labels = kind.augment(inputs, labels, np.random.default_rng(2))
    assert maze_rules.valid_paths(moved_inputs, moved_labels).all()
    gather = maze_rules.dihedral_gather(6)
    for row_in, row_label in zip(moved_inputs, moved_labels):
        k = next(k for k in range(8) if np.array_equal(inputs[0][gather[k]], row_in))
        np.testing.assert_array_equal(labels[0][gather[k]], row_label)
    assert len({row.tobytes() for row in moved_inputs}) > 1


def test_arc_compact_reads_back_as_a_bare_grid() -> None:
    kind = ARCKind()
    puzzle = kind.parse(json.dumps(ARC_TASK), name="flip")[1]
    assert kind.compact(puzzle.inputs) == "[[5,6],[7,8],[9,1]]"
    (bare,) = kind.parse(kind.compact(puzzle.inputs), name="grid")
    np.testing.assert_array_equal(bare.inputs, puzzle.inputs)
    assert bare.puzzle_id == 0 and bare.labels is None
    with pytest.raises(ValueError, match="ragged"):
        kind.parse("[[1, 2], [3]]")


def test_read_text_is_the_public_extension_point(tmp_path) -> None:
    class Comma(SudokuKind):
        """Reads puzzles separated by ';' on one line."""

        def read_text(self, path, text):
            return [p for i, chunk in enumerate(text.strip().split(";")) for p in self._parse_at(path, i + 1, chunk)]

    kind = Comma(4)
    inputs, _ = kind.generate(2, np.random.default_rng(0))
    source = tmp_path / "puzzles.txt"
    source.write_text(";".join(kind.compact(row) for row in inputs))
    np.testing.assert_array_equal(np.stack([p.inputs for p in kind.read_file(source)]), inputs)
