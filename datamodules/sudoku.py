"""Sudoku data for Lightning: token encoding, an augmenting dataset and two datamodules.

``Sudoku`` reads Sudoku-Extreme (Hugging Face ``sapientinc/sudoku-extreme``) CSV files; ``GeneratedSudoku`` makes
4x4 / 6x6 / 9x9 puzzles with unique solutions and caches them. Tokens: 0 PAD, 1 blank, 2..N+1 the digits 1..N, so
the vocabulary has N + 2 entries (11 for 9x9). Labels are the solution tokens: no PAD, every cell is scored.
"""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np

from datamodules import sudoku_rules as rules
from datamodules.base import PuzzleDataModule
from datamodules.dataset import Batch, PuzzleDataset
from datamodules.generated import GeneratedArrays, GeneratedSplits
from datamodules.sources import ensure_csv_files, head_splits
from datamodules.kinds.sudoku import SudokuKind, decode, encode

__all__ = ["GeneratedSudoku", "Sudoku", "SudokuDataModule", "SudokuDataset", "add_hints", "decode", "encode"]

PAD = 0
BLANK = 1
HF_REPO_ID = "sapientinc/sudoku-extreme"
_CACHE_FORMAT = 2
_HINT_STREAM = 0x68696E74  # "hint": keeps the hint draws apart from the symmetry draws of the same index


class SudokuDataset(PuzzleDataset):
    """Map-style dataset of puzzles with on-the-fly, per-index deterministic augmentation.

    Index i is puzzle ``i % n_puzzles`` under augmentation ``i // n_puzzles``. Augmentation 0 is the identity; the
    others draw the keys of a validity-preserving symmetry (``sudoku_rules.symmetries_from_keys``) from
    ``np.random.default_rng((seed, i))``, so an index always gives the same example and no augmented copy is stored.

    With ``hints`` (the hint augmentation of Augmented HRM) the dataset is twice as long: index ``m + i``, where
    ``m = n_puzzles * augmentations``, is the hinted twin of index i: the same (augmented) example with k of its B
    blanks filled from the solution, k uniform in 1..B-1 (no hint when B < 2), drawn from
    ``np.random.default_rng((seed, i, _HINT_STREAM))``. Labels are unchanged, so the twin is an easier view of the
    same puzzle.
    """

    def __init__(
        self,
        puzzles: np.ndarray,
        solutions: np.ndarray,
        augmentations: int = 1,
        seed: int = 0,
        hints: bool = False,
    ) -> None:
        """Hold puzzles and solutions ([n, N*N], 0 blank); serve ``n * augmentations`` examples (twice with hints)."""
        if puzzles.shape != solutions.shape or puzzles.ndim != 2:
            raise ValueError(f"puzzles {puzzles.shape} and solutions {solutions.shape} must both be [n, N*N]")
        if augmentations < 1:
            raise ValueError(f"augmentations must be >= 1 (1 = no augmentation), got {augmentations}")
        self.size = math.isqrt(puzzles.shape[1])
        if self.size * self.size != puzzles.shape[1]:
            raise ValueError(f"rows of {puzzles.shape[1]} cells are not a square Sudoku grid")
        rules.box_shape(self.size)
        self.puzzles = np.ascontiguousarray(puzzles, dtype=np.uint8)
        self.solutions = np.ascontiguousarray(solutions, dtype=np.uint8)
        self.augmentations = augmentations
        self.seed = seed
        self.hints = hints

    def __len__(self) -> int:
        """Number of examples: puzzles times augmentations, doubled by the hinted twins."""
        return len(self.puzzles) * self.augmentations * (2 if self.hints else 1)

    def example(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the (puzzle, solution) grids [N*N] of one index, augmented as the index says."""
        item = self[index]
        return decode(item["inputs"].numpy()), decode(item["labels"].numpy())

    def __getitems__(self, indices: list[int]) -> Batch:
        """The batch of `indices` (DataLoader calls it): each index keeps its own seeded transform, applied at once."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range for a dataset of {len(self)} examples")
        n = len(self.puzzles)
        originals = n * self.augmentations
        twins = np.flatnonzero(idx >= originals)
        idx = np.where(idx >= originals, idx - originals, idx)
        puzzles = self.puzzles[idx % n].astype(np.int64)
        solutions = self.solutions[idx % n].astype(np.int64)
        augmented = np.flatnonzero(idx >= n)
        if augmented.size:
            k = rules.symmetry_key_count(self.size)
            keys = np.stack([np.random.default_rng((self.seed, int(idx[j]))).random(k) for j in augmented])
            digit_maps, gather = rules.symmetries_from_keys(keys, self.size)
            for grids in (puzzles, solutions):
                moved = np.take_along_axis(grids[augmented], gather, axis=1)
                grids[augmented] = np.take_along_axis(digit_maps, moved, axis=1)
        if twins.size:
            cells = puzzles.shape[1]
            draws = np.stack([np.random.default_rng((self.seed, int(idx[j]), _HINT_STREAM)).random(cells + 1)
                              for j in twins])
            puzzles[twins] = add_hints(puzzles[twins], solutions[twins], draws)
        return self.batch(encode(puzzles), encode(solutions))


def add_hints(puzzles: np.ndarray, solutions: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Fill k of each puzzle's B blanks from its solution, k uniform in 1..B-1 (puzzles with B < 2 stay as they are).

    Vectorised over the batch: `puzzles` and `solutions` are grids [b, L] (0 blank), `draws` uniform numbers in [0, 1)
    of shape [b, L + 1]: column 0 picks k, the others rank the cells, and the k blanks of lowest rank are filled, so
    every k-subset of the blanks is equally likely. Returns new puzzles [b, L]; the givens are kept.
    """
    if puzzles.shape != solutions.shape or draws.shape != (puzzles.shape[0], puzzles.shape[1] + 1):
        raise ValueError(f"puzzles {puzzles.shape} and solutions {solutions.shape} must match and draws "
                         f"{draws.shape} must be [b, L + 1]")
    blank = puzzles == 0
    b = blank.sum(axis=1)
    k = np.where(b >= 2, 1 + np.floor(draws[:, 0] * (b - 1)).astype(np.int64), 0)
    order = np.argsort(np.where(blank, draws[:, 1:], 2.0), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(puzzles.shape[1]), order.shape), axis=1)
    return np.where(blank & (rank < k[:, None]), solutions, puzzles)


class SudokuDataModule(PuzzleDataModule):
    """Shared base of the Sudoku datamodules: grid size, token metadata and the augmenting dataset.

    Args:
        size: Side of the grid: 4, 6 or 9.
        augmentations: Copies of each training puzzle, the first untouched and the rest randomly transformed.
        batch_size: Global training batch size (over all devices; docs/scaling.md).
        eval_batch_size: Batch size for validation, test and prediction; None uses batch_size.
        num_workers: DataLoader worker processes.
        seed: Seed of the augmentations, the hints and the shuffling.
        hints: Double the training set with a hinted twin of every example (Augmented HRM): the same example with
            k of its B blanks filled from the solution, k uniform in 1..B-1. Validation and test are never hinted.
    """

    def __init__(
        self,
        size: int,
        augmentations: int = 1,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        hints: bool = False,
    ) -> None:
        """Store loader settings; `size` is the side of the grid (4, 6 or 9)."""
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        rules.box_shape(size)
        if augmentations < 1:
            raise ValueError(f"augmentations must be >= 1 (1 = no augmentation), got {augmentations}")
        self._size = size
        self.augmentations = augmentations
        self.hints = hints

    @property
    def size(self) -> int:
        """Side of the grid N."""
        return self._size

    @property
    def vocab_size(self) -> int:
        """Number of token ids: PAD, blank and N digits."""
        return self._size + 2

    @property
    def seq_len(self) -> int:
        """Tokens per example: N * N cells."""
        return self._size * self._size

    @property
    def num_puzzle_ids(self) -> int:
        """Sudoku uses one puzzle id (0) for every example."""
        return 1

    @property
    def puzzle_kind(self) -> SudokuKind:
        """N x N Sudokus as text of digits and '.' (or '0') for blanks."""
        return SudokuKind(self._size)

    def make_dataset(self, inputs: np.ndarray, labels: np.ndarray, train: bool) -> SudokuDataset:
        """The puzzles, augmented (and hinted with `hints`) only for training."""
        return SudokuDataset(inputs, labels, self.augmentations if train else 1, self.seed, hints=self.hints and train)


def _read_grids(path: Path, limit: int | None = None, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read (questions, answers) of a Sudoku-Extreme CSV as uint8 [n, 81], validating each kept row.

    Args:
        path: CSV or CSV.gz file with header ``source,question,answer,rating``.
        limit: Keep only the first `limit` data rows (None = all).
        rows: Sorted data-row indices to keep (None = all).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    questions: list[str] = []
    answers: list[str] = []
    lines: list[int] = []
    wanted = iter(rows.tolist()) if rows is not None else None
    next_wanted = next(wanted, None) if wanted is not None else None
    with opener(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["source", "question", "answer"]:
            raise ValueError(f"{path}:1: expected the header 'source,question,answer,rating', got {header!r}")
        index = -1
        for record in reader:
            if not record:
                continue
            index += 1
            if limit is not None and index >= limit:
                break
            if wanted is not None:
                if index != next_wanted:
                    continue
                next_wanted = next(wanted, None)
            if len(record) < 3:
                raise ValueError(f"{path}:{reader.line_num}: expected at least 3 columns, got {len(record)}")
            question, answer = record[1], record[2]
            for name, text in (("question", question), ("answer", answer)):
                if len(text) != 81:
                    raise ValueError(f"{path}:{reader.line_num}: {name} has {len(text)} characters, expected 81")
            questions.append(question)
            answers.append(answer)
            lines.append(reader.line_num)
            if wanted is not None and next_wanted is None:
                break
    if not questions:
        empty = np.zeros((0, 81), dtype=np.uint8)
        return empty, empty.copy()
    q = np.frombuffer("".join(questions).encode("latin-1", "replace"), dtype=np.uint8).reshape(-1, 81)
    a = np.frombuffer("".join(answers).encode("latin-1", "replace"), dtype=np.uint8).reshape(-1, 81)
    q_ok = (q == ord(".")) | ((q >= ord("0")) & (q <= ord("9")))
    a_ok = (a >= ord("1")) & (a <= ord("9"))
    q = np.where(q == ord("."), 0, q.astype(np.int16) - ord("0")).astype(np.uint8)
    a = (a.astype(np.int16) - ord("0")).astype(np.uint8)
    checks = [
        (q_ok.all(axis=1), "question must hold only digits and '.' for blanks"),
        (a_ok.all(axis=1), "answer must hold only digits 1-9"),
        (rules.is_consistent(q, a), "answer does not match the givens of the question"),
        (rules.valid_solutions(a), "answer is not a valid Sudoku solution"),
    ]
    for ok, message in checks:
        if not ok.all():
            bad = int(np.argmin(ok))
            raise ValueError(f"{path}:{lines[bad]}: {message}")
    return q, a


class Sudoku(SudokuDataModule):
    """Sudoku-Extreme 9x9 (Hugging Face ``sapientinc/sudoku-extreme``): seeded training subsample with augmentation.

    Validation is the first `val_size` rows of the test file and test the first `test_size` rows; neither is
    augmented. Training item i is puzzle ``i % subsample`` under augmentation ``i // subsample``; with ``hints`` the
    items after those are their hinted twins, in the same order.
    """

    def __init__(
        self,
        data_dir: str = "data/sudoku-extreme",
        subsample: int | None = 1000,
        augmentations: int = 1000,
        val_size: int = 2048,
        test_size: int | None = None,
        batch_size: int = 768,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        download: bool = False,
        hints: bool = False,
    ) -> None:
        """Configure the Sudoku-Extreme datamodule.

        Args:
            data_dir: Directory holding train.csv and test.csv (or .csv.gz) with header source,question,answer,rating.
            subsample: Number of training puzzles drawn (seeded) from train.csv; None uses all of them.
            augmentations: Copies of each training puzzle, the first untouched and the rest randomly transformed.
            val_size: Number of leading test-file rows used for validation.
            test_size: Number of leading test-file rows used for testing and prediction; None uses all.
            batch_size: Global training batch size (over all devices; docs/scaling.md).
            eval_batch_size: Batch size for validation, test and prediction; None uses batch_size.
            num_workers: DataLoader worker processes.
            seed: Seed of the subsample, the augmentations, the hints and the shuffling.
            download: Fetch missing files from Hugging Face (needs the huggingface_hub package and network).
            hints: Double the training set with a hinted twin of every example (Augmented HRM): the same example
                with k of its B blanks filled from the solution, k uniform in 1..B-1. Validation and test are never
                hinted.
        """
        super().__init__(9, augmentations, batch_size, eval_batch_size, num_workers, seed, hints)
        if subsample is not None and subsample < 1:
            raise ValueError(f"subsample must be >= 1 or None (all puzzles), got {subsample}")
        self.data_dir = Path(data_dir)
        self.subsample = subsample
        self.val_size = val_size
        self.test_size = test_size
        self.download = download
        self.save_hyperparameters()

    def prepare_data(self) -> None:
        """Download the CSV files when missing and allowed; otherwise check they exist."""
        ensure_csv_files(self.data_dir, self.download, HF_REPO_ID, "Sudoku-Extreme")

    def load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Read the training subsample and the leading rows of the test file."""
        paths = ensure_csv_files(self.data_dir, self.download, HF_REPO_ID, "Sudoku-Extreme")
        train_path, test_path = paths["train"], paths["test"]
        rows = None
        if self.subsample is not None:
            opener = gzip.open if train_path.suffix == ".gz" else open
            with opener(train_path, "rb") as f:
                n_rows = sum(1 for line in f if line.strip()) - 1
            if self.subsample > n_rows:
                raise ValueError(f"subsample={self.subsample} but {train_path} has only {n_rows} puzzles")
            rows = np.sort(np.random.default_rng(self.seed).choice(n_rows, self.subsample, replace=False))
        limit = None if self.test_size is None else max(self.val_size, self.test_size)
        test = _read_grids(test_path, limit=limit)
        train = _read_grids(train_path, rows=rows)
        if len(train[0]) == 0:
            raise ValueError(f"{train_path} holds no puzzles (only a header?); the training set cannot be empty")
        return head_splits(train, test, self.val_size, self.test_size, test_path)


class GeneratedSudoku(GeneratedSplits, SudokuDataModule):
    """Generated Sudoku puzzles with unique solutions (4x4, 6x6 or 9x9), cached as .npz under cache_dir.

    The puzzles are generated once, deduplicated and split in order into disjoint train / val / test sets.
    """

    def __init__(
        self,
        size: int = 6,
        givens: int | None = None,
        train_size: int = 20000,
        val_size: int = 1000,
        test_size: int = 1000,
        augmentations: int = 1,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = ".cache/rr",
        hints: bool = False,
        distinct_solutions: bool = False,
    ) -> None:
        """Configure the generated-Sudoku datamodule.

        Args:
            size: Side of the grid: 4 (2x2 boxes), 6 (2x3 boxes) or 9 (3x3 boxes).
            givens: Number of given cells per puzzle; None makes minimal puzzles (no given can be removed).
            train_size: Number of training puzzles.
            val_size: Number of validation puzzles.
            test_size: Number of test puzzles.
            augmentations: Copies of each training puzzle, the first untouched and the rest randomly transformed.
            batch_size: Global training batch size (over all devices; docs/scaling.md).
            eval_batch_size: Batch size for validation, test and prediction; None uses batch_size.
            num_workers: DataLoader worker processes.
            seed: Seed of the generator, the augmentations, the hints and the shuffling.
            cache_dir: Directory for the generated .npz (keyed by the generation settings); None disables caching.
            hints: Double the training set with a hinted twin of every example (Augmented HRM): the same example
                with k of its B blanks filled from the solution, k uniform in 1..B-1. Validation and test are never
                hinted.
            distinct_solutions: No two puzzles of the whole set (train, val and test) share a solution grid, so no
                held-out puzzle shares its solution with a training puzzle; False only makes the puzzles distinct.
                (4x4 Sudoku has only 288 solution grids, which caps the total.)
        """
        super().__init__(size, augmentations, batch_size, eval_batch_size, num_workers, seed, hints)
        if givens is not None and not 0 < givens <= size * size:
            raise ValueError(f"givens must be between 1 and {size * size} for {size}x{size}, or None; got {givens}")
        for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.givens = givens
        self.train_size = train_size
        self.val_size = val_size
        self.test_size = test_size
        self.distinct_solutions = distinct_solutions
        key = {"format": _CACHE_FORMAT, "size": size, "givens": givens, "train_size": train_size,
               "val_size": val_size, "test_size": test_size, "seed": seed}
        stem = f"sudoku{size}_g{'min' if givens is None else givens}_n{train_size}-{val_size}-{test_size}_s{seed}"
        if distinct_solutions:  # only then: the keys and cache files of the default stay as they were
            key["distinct_solutions"] = True
            stem += "_ds"
        self.generated = GeneratedArrays(
            lambda count, entropy: rules.generate(size, count, givens, _entropy=entropy),
            train_size + val_size + test_size, key, stem, cache_dir, seed,
            distinct="labels" if distinct_solutions else "inputs",
        )
        self.save_hyperparameters()

