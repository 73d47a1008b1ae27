"""Tests of the numpy Sudoku rules: parsing, checking, solving, generation and augmentation."""

from __future__ import annotations

import csv
import gzip

import numpy as np
import pytest
from conftest import require_shared

from datamodules import sudoku_rules as rules

SAMPLE_PATH = "data/sudoku-extreme/train_random1k.csv.gz"


@pytest.fixture(scope="module")
def real() -> tuple[np.ndarray, np.ndarray]:
    """The real Sudoku-Extreme sample as (puzzles, solutions) [1000, 81]."""
    sample = require_shared(SAMPLE_PATH)
    with gzip.open(sample, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    puzzles = np.stack([rules.parse_puzzle(r["question"]) for r in rows])
    solutions = np.stack([rules.parse_puzzle(r["answer"]) for r in rows])
    return puzzles, solutions


def test_box_shape() -> None:
    assert rules.box_shape(4) == (2, 2)
    assert rules.box_shape(6) == (2, 3)
    assert rules.box_shape(9) == (3, 3)
    with pytest.raises(ValueError, match="unsupported Sudoku size 5"):
        rules.box_shape(5)


def test_real_answers_valid_and_consistent(real: tuple[np.ndarray, np.ndarray]) -> None:
    puzzles, solutions = real
    assert puzzles.shape == solutions.shape == (1000, 81)
    assert rules.valid_solutions(solutions).all()
    assert rules.is_consistent(puzzles, solutions).all()
    assert (rules.violations(solutions) == 0).all()
    assert (rules.violations(puzzles) == 0).all()
    assert not rules.valid_solutions(puzzles).any()
    assert rules.is_valid_solution(solutions[0].reshape(9, 9)) is True


def test_invalid_grids_detected(real: tuple[np.ndarray, np.ndarray]) -> None:
    _, solutions = real
    good = solutions[:20].copy()
    swapped = good.copy()
    swapped[:, [0, 9]] = swapped[:, [9, 0]]  # swap two cells of a column: rows break
    changed = good.copy()
    changed[:, 40] = changed[:, 40] % 9 + 1
    blanked = good.copy()
    blanked[:, 5] = 0
    out_of_range = good.copy()
    out_of_range[:, 7] = 10
    for bad in (swapped, changed, blanked, out_of_range):
        assert not rules.valid_solutions(bad).any()
    assert (rules.violations(changed) > 0).all()
    assert not rules.is_consistent(good[0], changed[0])
    puzzle = solutions[0].copy()
    puzzle[1:] = 0
    assert rules.is_consistent(puzzle, solutions[0])


def test_checker_shapes() -> None:
    grid = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]])
    assert rules.is_valid_solution(grid) is True
    assert rules.is_valid_solution(grid.ravel()) is True
    latin_not_sudoku = np.array([[1, 2, 3, 4], [2, 3, 4, 1], [3, 4, 1, 2], [4, 1, 2, 3]])  # rows/cols fine, boxes not
    batch = np.stack([grid.ravel(), grid.ravel()[::-1].copy(), latin_not_sudoku.ravel()])
    assert rules.valid_solutions(batch).tolist() == [True, True, False]
    assert isinstance(rules.violations(grid), int)
    with pytest.raises(ValueError, match="cannot read a Sudoku grid"):
        rules.valid_solutions(np.zeros((3, 5)))


def test_solver_finds_known_answers(real: tuple[np.ndarray, np.ndarray]) -> None:
    puzzles, solutions = real
    for k in range(3):
        found = rules.solve(puzzles[k], limit=2)
        assert len(found) == 1
        np.testing.assert_array_equal(found[0], solutions[k])
    assert rules.has_unique_solution(puzzles[3])
    found = rules.solve(puzzles[0].reshape(9, 9))
    assert found[0].shape == (9, 9)


def test_solver_counts_and_contradictions() -> None:
    empty = np.zeros(16, dtype=np.int64)
    found = rules.solve(empty, limit=5)
    assert len(found) == 5
    assert rules.valid_solutions(np.stack(found)).all()
    assert len({s.tobytes() for s in found}) == 5
    assert not rules.has_unique_solution(empty)
    clash = empty.copy()
    clash[[0, 1]] = 3
    assert rules.solve(clash) == []


@pytest.mark.parametrize("size", [4, 6])
def test_generated_minimal_puzzles(size: int) -> None:
    puzzles, solutions = rules.generate(size, 6, givens=None, seed=1, workers=1)
    assert puzzles.shape == solutions.shape == (6, size * size)
    assert rules.valid_solutions(solutions).all()
    assert rules.is_consistent(puzzles, solutions).all()
    for puzzle, solution in zip(puzzles, solutions):
        found = rules.solve(puzzle, limit=2)
        assert len(found) == 1 and np.array_equal(found[0], solution)
        for i in np.flatnonzero(puzzle):
            smaller = puzzle.copy()
            smaller[i] = 0
            assert not rules.has_unique_solution(smaller), "a minimal puzzle must lose uniqueness without any given"


@pytest.mark.parametrize(("size", "givens"), [(4, 6), (6, 16), (9, 34)])
def test_generated_givens_count(size: int, givens: int) -> None:
    puzzles, solutions = rules.generate(size, 4, givens=givens, seed=3, workers=1)
    assert ((puzzles > 0).sum(axis=1) == givens).all()
    assert all(rules.has_unique_solution(p) for p in puzzles)
    assert rules.is_consistent(puzzles, solutions).all()


def test_generation_is_seeded_and_worker_independent() -> None:
    a = rules.generate(4, 70, seed=7, workers=1)
    b = rules.generate(4, 70, seed=7, workers=2)
    c = rules.generate(4, 70, seed=8, workers=1)
    prefix = rules.generate(4, 40, seed=7, workers=1)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0][:40], prefix[0])
    assert not np.array_equal(a[0], c[0])


def test_generation_rejects_impossible_targets() -> None:
    with pytest.raises(ValueError, match="givens"):
        rules.generate(4, 1, givens=2, workers=1)
    with pytest.raises(ValueError, match="between 0 and 16"):
        rules.generate(4, 1, givens=17)
    with pytest.raises(ValueError, match="unsupported Sudoku size"):
        rules.generate(7, 1)


@pytest.mark.parametrize("size", [4, 6, 9])
def test_augmentation_preserves_validity(size: int) -> None:
    puzzles, solutions = rules.generate(size, 3, givens=None if size < 9 else 30, seed=0, workers=1)
    rng = np.random.default_rng(0)
    transposed = 0
    for k in range(200):
        p, s = puzzles[k % 3], solutions[k % 3]
        sym = rules.random_symmetry(rng, size)
        transposed += sym.transpose
        p2, s2 = rules.apply_symmetry(p, sym), rules.apply_symmetry(s, sym)
        assert p2.shape == p.shape and p2.dtype == p.dtype
        assert rules.is_valid_solution(s2)
        assert rules.is_consistent(p2, s2)
        assert (p2 > 0).sum() == (p > 0).sum()
        assert sorted(sym.digit_map[1:].tolist()) == list(range(1, size + 1)) and sym.digit_map[0] == 0
    if size == 6:
        assert transposed == 0, "6x6 boxes are not square, so transposing would break them"
    else:
        assert 50 < transposed < 150


def test_augmentation_on_2d_grid_and_determinism() -> None:
    _, solutions = rules.generate(9, 1, givens=40, seed=2, workers=1)
    grid = solutions[0].reshape(9, 9)
    sym_a = rules.random_symmetry(np.random.default_rng(5), 9)
    sym_b = rules.random_symmetry(np.random.default_rng(5), 9)
    out = rules.apply_symmetry(grid, sym_a)
    assert out.shape == (9, 9) and rules.is_valid_solution(out)
    np.testing.assert_array_equal(out, rules.apply_symmetry(grid, sym_b))


@pytest.mark.parametrize("size", [4, 6, 9])
def test_random_symmetry_matches_batched_keys(size: int) -> None:
    for seed in range(20):
        sym = rules.random_symmetry(np.random.default_rng(seed), size)
        keys = np.random.default_rng(seed).random((1, rules.symmetry_key_count(size)))
        digit_maps, gather = rules.symmetries_from_keys(keys, size)
        np.testing.assert_array_equal(digit_maps[0], sym.digit_map)
        np.testing.assert_array_equal(gather[0], rules.symmetry_gather(sym))


@pytest.mark.parametrize(
    ("text", "kwargs", "pattern"),
    [
        ("1" * 80, {}, r"puzzle has 80 characters; expected one of 16 for 4x4, 36 for 6x6, 81 for 9x9"),
        ("." * 80, {"size": 9}, r"puzzle has 80 characters; a 9x9 Sudoku needs 81 \('\.' or '0' for blanks\)"),
        ("12x4" + "." * 12, {}, r"invalid character 'x' at position 2; use digits 1-4 and '\.' or '0' for blanks"),
        ("5" + "." * 15, {}, r"digit 5 at position 0, out of range for a 4x4 Sudoku; use digits 1-4"),
        ("7" + "0" * 35, {}, r"digit 7 at position 0, out of range for a 6x6"),
    ],
)
def test_parse_errors_are_helpful(text: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        rules.parse_puzzle(text, **kwargs)


def test_parse_and_format() -> None:
    grid = rules.parse_puzzle("1.3. 0000 2... ...4")
    assert grid.tolist() == [1, 0, 3, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 4]
    text = rules.format_grid(grid)
    assert text.splitlines()[0] == " 1 . | 3 . "
    assert "-" in text
