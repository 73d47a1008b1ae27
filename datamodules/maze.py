"""Maze data for Lightning: an augmenting dataset and two datamodules.

``Maze`` reads Maze-Hard (Hugging Face ``sapientinc/maze-30x30-hard-1k``: 1000 train and 1000 test 30x30 mazes whose
shortest path has at least 109 moves) from CSV files; ``GeneratedMaze`` makes random mazes with
``maze_rules.generate`` and caches them. Tokens are the cell codes of ``maze_rules``: 0 PAD, 1 wall, 2 open, 3 start,
4 goal, 5 path (vocabulary 6). Inputs are the mazes, labels the mazes with one shortest path marked; no PAD, every
cell is scored. Training may be augmented with the 8 dihedral transforms; evaluation never is.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import torch

from datamodules import maze_rules as rules
from datamodules.base import PuzzleDataModule
from datamodules.dataset import Batch, PuzzleDataset
from datamodules.evaluator import PuzzleEvaluator
from datamodules.generated import GeneratedArrays, GeneratedSplits
from datamodules.sources import ensure_csv_files, head_splits
from datamodules.kinds import MazeKind

__all__ = ["GeneratedMaze", "Maze", "MazeDataModule", "MazeDataset", "PathEvaluator"]

HF_REPO_ID = "sapientinc/maze-30x30-hard-1k"
MAZE_HARD_SIDE = 30
_CACHE_FORMAT = 2


class MazeDataset(PuzzleDataset):
    """Map-style dataset of mazes with on-the-fly, per-index deterministic dihedral augmentation.

    Index i is maze ``i % n_mazes`` under dihedral transform ``i // n_mazes`` (``maze_rules.dihedral``; 0 is the
    identity). With augment the dataset has 8 * n_mazes examples, else n_mazes. No augmented copy is stored.
    """

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, augment: bool = False) -> None:
        """Hold mazes and their answers (codes, [n, N*N]) and serve them, 8 times transformed when `augment`."""
        if inputs.shape != labels.shape or inputs.ndim != 2:
            raise ValueError(f"inputs {inputs.shape} and labels {labels.shape} must both be [n, N*N]")
        self.side = int(round(inputs.shape[1] ** 0.5))
        if self.side * self.side != inputs.shape[1]:
            raise ValueError(f"rows of {inputs.shape[1]} cells are not square mazes")
        self.inputs = np.ascontiguousarray(inputs, dtype=np.uint8)
        self.labels = np.ascontiguousarray(labels, dtype=np.uint8)
        self.transforms = 8 if augment else 1
        self.gather = rules.dihedral_gather(self.side)  # [8, N*N]

    def __len__(self) -> int:
        """Number of examples: mazes times transforms."""
        return len(self.inputs) * self.transforms

    def __getitems__(self, indices: list[int]) -> Batch:
        """The batch of `indices` (DataLoader calls it): one gather applies each index's transform at once."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range for a dataset of {len(self)} examples")
        n = len(self.inputs)
        gather = self.gather[idx // n]  # [B, N*N]
        inputs = np.take_along_axis(self.inputs[idx % n], gather, axis=1)
        labels = np.take_along_axis(self.labels[idx % n], gather, axis=1)
        return self.batch(inputs, labels)


class PathEvaluator(PuzzleEvaluator):
    """Fraction of predictions that mark a shortest S -> G path of their maze (`maze_rules.valid_paths`), logged as
    ``valid_path`` beside exact accuracy: a prediction can be a correct shortest path yet differ from the label."""

    progress_bar = ("valid_path",)

    def __init__(self) -> None:
        super().__init__()
        self.add_state("valid", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, batch: dict[str, torch.Tensor], predictions: torch.Tensor, halt_logits: torch.Tensor) -> None:
        """Check every predicted grid [B, N*N] against its maze batch["inputs"]."""
        ok = rules.valid_paths(batch["inputs"].detach().cpu().numpy(), predictions.detach().cpu().numpy())
        self.valid += float(ok.sum())
        self.total += float(len(ok))

    def compute(self) -> dict[str, torch.Tensor]:
        """{"valid_path": fraction of predictions that are shortest paths}."""
        return {"valid_path": self.valid / self.total.clamp(min=1.0)}


class MazeDataModule(PuzzleDataModule):
    """Shared base of the maze datamodules: maze side, token metadata, the augmenting dataset and the path checker."""

    def __init__(
        self,
        side: int,
        augment: bool = True,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        """Store loader settings; `side` is the side N of the square mazes."""
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if side < 2:
            raise ValueError(f"side must be >= 2, got {side}")
        self._side = side
        self.augment = augment

    @property
    def side(self) -> int:
        """Side N of the mazes."""
        return self._side

    @property
    def vocab_size(self) -> int:
        """Number of token ids: PAD, wall, open, start, goal, path."""
        return 6

    @property
    def seq_len(self) -> int:
        """Tokens per example: N * N cells."""
        return self._side * self._side

    @property
    def num_puzzle_ids(self) -> int:
        """Mazes use one puzzle id (0) for every example."""
        return 1

    @property
    def puzzle_kind(self) -> MazeKind:
        """Mazes of this side, as text '# SG'."""
        return MazeKind(self._side)

    def evaluator(self, stage: str) -> PathEvaluator:
        """The path checker, logged as {stage}/valid_path."""
        return PathEvaluator()

    def make_dataset(self, inputs: np.ndarray, labels: np.ndarray, train: bool) -> MazeDataset:
        """The mazes, under all 8 dihedral transforms when training with `augment`."""
        return MazeDataset(inputs, labels, augment=self.augment and train)


def read_maze_csv(path: Path, side: int = MAZE_HARD_SIDE, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read (questions, answers) of a Maze-Hard CSV as uint8 codes [n, N*N], validating every kept row.

    Each row must hold a maze with one S and one G, an answer that only turns open cells into path cells and marks
    a shortest S -> G path, and (when the column is there) shortest_path_moves equal to the BFS distance. Errors name
    the file and line.

    Args:
        path: CSV or CSV.gz file with header ``source,question,answer[,shortest_path_moves]``.
        side: Side N of the mazes (30 for Maze-Hard).
        limit: Keep only the first `limit` data rows (None = all).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    cells = side * side
    questions: list[str] = []
    answers: list[str] = []
    moves: list[int | None] = []
    lines: list[int] = []
    with opener(path, "rt", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["source", "question", "answer"]:
            raise ValueError(
                f"{path}:1: expected the header 'source,question,answer,shortest_path_moves', got {header!r}"
            )
        has_moves = len(header) > 3 and header[3].strip() == "shortest_path_moves"
        for record in reader:
            if not record:
                continue
            if limit is not None and len(questions) >= limit:
                break
            if len(record) < 3:
                raise ValueError(f"{path}:{reader.line_num}: expected at least 3 columns, got {len(record)}")
            for name, text in (("question", record[1]), ("answer", record[2])):
                if len(text) != cells:
                    raise ValueError(
                        f"{path}:{reader.line_num}: {name} has {len(text)} characters, expected {cells} ({side}x{side})"
                    )
            value = None
            if has_moves and len(record) > 3:
                try:
                    value = int(record[3])
                except ValueError:
                    raise ValueError(
                        f"{path}:{reader.line_num}: shortest_path_moves {record[3]!r} is not an integer"
                    ) from None
            questions.append(record[1])
            answers.append(record[2])
            moves.append(value)
            lines.append(reader.line_num)
    if not questions:
        empty = np.zeros((0, cells), dtype=np.uint8)
        return empty, empty.copy()
    lut = rules._LUT
    q = lut[np.frombuffer("".join(questions).encode("latin-1", "replace"), dtype=np.uint8)].reshape(-1, cells)
    a = lut[np.frombuffer("".join(answers).encode("latin-1", "replace"), dtype=np.uint8)].reshape(-1, cells)
    for name, grid, allowed in (("question", q, "'# SG'"), ("answer", a, "'# SGo'")):
        limit_code = rules.GOAL if name == "question" else rules.PATH
        bad = (grid > limit_code).any(axis=1)
        if bad.any():
            row = int(np.argmax(bad))
            i = int(np.argmax(grid[row] > limit_code))
            text = (questions if name == "question" else answers)[row]
            raise ValueError(
                f"{path}:{lines[row]}: {name} has invalid character {text[i]!r} at {rules._where(i, side)}; "
                f"use only {allowed}"
            )
    for code, name in ((rules.START, "start S"), (rules.GOAL, "goal G")):
        counts = (q == code).sum(axis=1)
        if (counts != 1).any():
            row = int(np.argmax(counts != 1))
            raise ValueError(f"{path}:{lines[row]}: question must have exactly one {name}, found {int(counts[row])}")
    found = rules.shortest_path_lengths(q)
    expected = np.array([-2 if m is None else m for m in moves])
    checks = [
        (found >= 0, "G cannot be reached from S"),
        (((a == q) | ((q == rules.OPEN) & (a == rules.PATH))).all(axis=1), "answer changes more than open cells"),
        (rules.valid_paths(q, a), "answer does not mark a shortest S -> G path"),
        ((expected == -2) | (expected == found), "shortest_path_moves differs from the BFS distance"),
    ]
    for ok, message in checks:
        if not ok.all():
            row = int(np.argmin(ok))
            raise ValueError(f"{path}:{lines[row]}: {message}")
    return q, a


class Maze(MazeDataModule):
    """Maze-Hard 30x30 (Hugging Face ``sapientinc/maze-30x30-hard-1k``): 1000 training and 1000 test mazes.

    Validation is the first `val_size` rows of the test file and test the first `test_size` rows; neither is
    augmented. With augment, training item i is maze ``i % 1000`` under dihedral transform ``i // 1000``.
    """

    def __init__(
        self,
        data_dir: str = "data/maze-30x30-hard-1k",
        augment: bool = True,
        val_size: int = 200,
        test_size: int | None = None,
        batch_size: int = 768,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        download: bool = False,
    ) -> None:
        """Configure the Maze-Hard datamodule.

        Args:
            data_dir: Directory holding train.csv and test.csv (or .csv.gz) with header
                source,question,answer,shortest_path_moves (the last column optional).
            augment: Serve each training maze under all 8 dihedral transforms (8000 examples instead of 1000).
            val_size: Number of leading test-file rows used for validation.
            test_size: Number of leading test-file rows used for testing and prediction; None uses all.
            batch_size: Global training batch size (over all devices; docs/scaling.md).
            eval_batch_size: Batch size for validation, test and prediction; None uses batch_size.
            num_workers: DataLoader worker processes.
            seed: Seed of the shuffling.
            download: Fetch missing files from Hugging Face (needs the huggingface_hub package and network).
        """
        super().__init__(MAZE_HARD_SIDE, augment, batch_size, eval_batch_size, num_workers, seed)
        if val_size < 0 or (test_size is not None and test_size < 1):
            raise ValueError(f"val_size must be >= 0 and test_size >= 1 or None, got {val_size} and {test_size}")
        self.data_dir = Path(data_dir)
        self.val_size = val_size
        self.test_size = test_size
        self.download = download
        self.save_hyperparameters()

    def prepare_data(self) -> None:
        """Download the CSV files when missing and allowed; otherwise check they exist."""
        ensure_csv_files(self.data_dir, self.download, HF_REPO_ID, "Maze-Hard")

    def load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Read all training mazes and the leading rows of the test file."""
        paths = ensure_csv_files(self.data_dir, self.download, HF_REPO_ID, "Maze-Hard")
        train = read_maze_csv(paths["train"], self.side)
        if len(train[0]) == 0:
            raise ValueError(f"{paths['train']} holds no mazes")
        limit = None if self.test_size is None else max(self.val_size, self.test_size)
        test = read_maze_csv(paths["test"], self.side, limit=limit)
        return head_splits(train, test, self.val_size, self.test_size, paths["test"])


class GeneratedMaze(GeneratedSplits, MazeDataModule):
    """Generated random mazes (``maze_rules.generate``) with long shortest paths, cached as .npz under cache_dir.

    The mazes are generated once, deduplicated and split in order into disjoint train / val / test sets.
    """

    def __init__(
        self,
        side: int = 10,
        min_path: int = 12,
        train_size: int = 2000,
        val_size: int = 200,
        test_size: int = 200,
        augment: bool = True,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = ".cache/rr",
    ) -> None:
        """Configure the generated-maze datamodule.

        Args:
            side: Side N of the square mazes (>= 2).
            min_path: Minimum shortest-path length in moves from S to G.
            train_size: Number of training mazes.
            val_size: Number of validation mazes.
            test_size: Number of test mazes.
            augment: Serve each training maze under all 8 dihedral transforms.
            batch_size: Global training batch size (over all devices; docs/scaling.md).
            eval_batch_size: Batch size for validation, test and prediction; None uses batch_size.
            num_workers: DataLoader worker processes.
            seed: Seed of the generator and the shuffling.
            cache_dir: Directory for the generated .npz (keyed by the generation settings); None disables caching.
        """
        super().__init__(side, augment, batch_size, eval_batch_size, num_workers, seed)
        if not 1 <= min_path <= side * side - 1:
            raise ValueError(f"min_path must be between 1 and {side * side - 1} for {side}x{side}, got {min_path}")
        for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.min_path = min_path
        self.train_size = train_size
        self.val_size = val_size
        self.test_size = test_size
        key = {"format": _CACHE_FORMAT, "side": side, "min_path": min_path, "wall_fraction": [0.3, 0.5],
               "train_size": train_size, "val_size": val_size, "test_size": test_size, "seed": seed}
        self.generated = GeneratedArrays(
            lambda count, entropy: rules.generate(side, count, min_path, (0.3, 0.5), _entropy=entropy),
            train_size + val_size + test_size,
            key,
            f"maze{side}_p{min_path}_n{train_size}-{val_size}-{test_size}_s{seed}",
            cache_dir,
            seed,
        )
        self.save_hyperparameters()

