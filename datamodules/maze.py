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
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules import maze_rules as rules

__all__ = ["GeneratedMaze", "Maze", "MazeDataModule", "MazeDataset"]

HF_REPO_ID = "sapientinc/maze-30x30-hard-1k"
MAZE_HARD_SIDE = 30
_CACHE_FORMAT = 1


class MazeDataset(Dataset):
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

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """Batched `__getitem__` (DataLoader calls it): one gather applies each index's transform at once."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range for a dataset of {len(self)} examples")
        n = len(self.inputs)
        gather = self.gather[idx // n]  # [B, N*N]
        inputs = torch.from_numpy(np.take_along_axis(self.inputs[idx % n], gather, axis=1).astype(np.int64))
        labels = torch.from_numpy(np.take_along_axis(self.labels[idx % n], gather, axis=1).astype(np.int64))
        zero = torch.tensor(0, dtype=torch.long)
        return [{"inputs": x, "labels": y, "puzzle_ids": zero} for x, y in zip(inputs, labels)]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Return ``{"inputs": LongTensor[L], "labels": LongTensor[L], "puzzle_ids": LongTensor scalar 0}``."""
        return self.__getitems__([int(index)])[0]


class MazeDataModule(L.LightningDataModule):
    """Shared base of the maze datamodules: metadata, datasets, dataloaders and the path checker."""

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
        super().__init__()
        if side < 2:
            raise ValueError(f"side must be >= 2, got {side}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._side = side
        self.augment = augment
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._splits: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.datasets: dict[str, MazeDataset] = {}

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

    def rule_checker(self, inputs: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
        """Whether each predicted grid of tokens [B, N*N] marks a shortest S -> G path of its maze (bool [B]).

        Args:
            inputs: Maze tokens [B, N*N].
            predictions: Predicted tokens [B, N*N] (e.g. the argmax of the logits).
        """
        ok = rules.valid_paths(inputs.detach().long().cpu().numpy(), predictions.detach().long().cpu().numpy())
        return torch.from_numpy(ok).to(inputs.device)

    def _load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Return {"train", "val", "test"} -> (inputs, labels) code arrays [n, N*N]; implemented by subclasses."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        """Load the splits once and build the datasets (training augmented when asked, evaluation never)."""
        if self._splits is None:
            self._splits = self._load_splits()
        if not self.datasets:
            self.datasets["train"] = MazeDataset(*self._splits["train"], augment=self.augment)
            for split in ("val", "test"):
                self.datasets[split] = MazeDataset(*self._splits[split], augment=False)

    def _dataset(self, split: str) -> MazeDataset:
        """Return a split's dataset, setting up on first use."""
        if not self.datasets:
            self.setup()
        return self.datasets[split]

    def _loader(self, dataset: MazeDataset, batch_size: int, train: bool) -> DataLoader:
        """Build a DataLoader with the shared worker settings."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            generator=torch.Generator().manual_seed(self.seed) if train else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) batches over the whole (augmented) training set, last partial batch dropped."""
        dataset = self._dataset("train")
        if len(dataset) < self.batch_size:
            raise ValueError(
                f"the training set has {len(dataset)} examples, fewer than batch_size={self.batch_size}, so no full "
                "batch can be made; lower batch_size, turn augment on or use more training mazes"
            )
        return self._loader(dataset, self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in order, never augmented."""
        return self._loader(self._dataset("val"), self.eval_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in order, never augmented."""
        return self._loader(self._dataset("test"), self.eval_batch_size, train=False)

    def predict_dataloader(self) -> DataLoader:
        """Prediction runs over the test data."""
        return self.test_dataloader()


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
            batch_size: Training batch size.
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

    def _find(self, name: str) -> Path | None:
        """Return the path of `name`.csv or `name`.csv.gz in data_dir, if either exists."""
        for suffix in (".csv", ".csv.gz"):
            path = self.data_dir / f"{name}{suffix}"
            if path.is_file():
                return path
        return None

    def _missing(self) -> list[str]:
        """Names of the CSV files not present in data_dir."""
        return [name for name in ("train", "test") if self._find(name) is None]

    def _download(self, names: list[str]) -> None:
        """Fetch the named CSV files from Hugging Face into data_dir."""
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as err:
            raise ImportError(
                "download=true needs the huggingface_hub package: pip install huggingface_hub "
                f"(or place train.csv and test.csv in {self.data_dir} yourself)"
            ) from err
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            try:
                hf_hub_download(
                    repo_id=HF_REPO_ID, filename=f"{name}.csv", repo_type="dataset", local_dir=str(self.data_dir)
                )
            except Exception as err:
                raise RuntimeError(
                    f"could not download {name}.csv of the Hugging Face dataset {HF_REPO_ID} ({err}); check the "
                    f"network, or download it by hand from https://huggingface.co/datasets/{HF_REPO_ID} and place "
                    f"it at {self.data_dir / f'{name}.csv'}"
                ) from err

    def _ensure_files(self) -> None:
        """Download missing files if allowed, else raise FileNotFoundError saying what to put where."""
        missing = self._missing()
        if missing and self.download:
            self._download(missing)
            missing = self._missing()
        if missing:
            expected = " and ".join(str(self.data_dir / f"{name}.csv") for name in missing)
            raise FileNotFoundError(
                f"Maze-Hard data not found: expected {expected} (or .csv.gz). Get train.csv and test.csv from the "
                f"Hugging Face dataset {HF_REPO_ID} (https://huggingface.co/datasets/{HF_REPO_ID}) into "
                f"{self.data_dir}, or pass download=true"
            )

    def prepare_data(self) -> None:
        """Download the CSV files when missing and allowed; otherwise check they exist."""
        self._ensure_files()

    def _load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Read all training mazes and the leading rows of the test file."""
        self._ensure_files()
        train_path, test_path = self._find("train"), self._find("test")
        assert train_path is not None and test_path is not None
        train = read_maze_csv(train_path, self.side)
        if len(train[0]) == 0:
            raise ValueError(f"{train_path} holds no mazes")
        limit = None if self.test_size is None else max(self.val_size, self.test_size)
        test_q, test_a = read_maze_csv(test_path, self.side, limit=limit)
        if len(test_q) == 0:
            raise ValueError(f"{test_path} holds no mazes")
        n_test = len(test_q) if self.test_size is None else min(self.test_size, len(test_q))
        return {
            "train": train,
            "val": (test_q[: self.val_size], test_a[: self.val_size]),
            "test": (test_q[:n_test], test_a[:n_test]),
        }


class GeneratedMaze(MazeDataModule):
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
            batch_size: Training batch size.
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
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self.save_hyperparameters()

    @property
    def cache_path(self) -> Path | None:
        """The .npz file for these generation settings (None when caching is off)."""
        if self.cache_dir is None:
            return None
        key = self._generation_key()
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        sizes = f"{self.train_size}-{self.val_size}-{self.test_size}"
        return self.cache_dir / f"maze{self.side}_p{self.min_path}_n{sizes}_s{self.seed}_{digest}.npz"

    def _generation_key(self) -> dict[str, Any]:
        """Every setting that changes the generated mazes."""
        return {
            "format": _CACHE_FORMAT,
            "side": self.side,
            "min_path": self.min_path,
            "wall_fraction": [0.3, 0.5],
            "train_size": self.train_size,
            "val_size": self.val_size,
            "test_size": self.test_size,
            "seed": self.seed,
        }

    def _generate(self) -> tuple[np.ndarray, np.ndarray]:
        """Generate enough distinct mazes for all splits (extra rounds replace duplicates)."""
        total = self.train_size + self.val_size + self.test_size
        inputs = np.zeros((0, self.seq_len), dtype=np.uint8)
        labels = inputs.copy()
        for attempt in range(20):
            need = total - len(inputs)
            if need <= 0:
                break
            entropy = (self.seed,) if attempt == 0 else (self.seed, attempt)
            count = need if attempt == 0 else need + need // 2 + 32
            q, a = rules.generate(self.side, count, self.min_path, (0.3, 0.5), _entropy=entropy)
            inputs, labels = np.concatenate([inputs, q]), np.concatenate([labels, a])
            _, first = np.unique(inputs, axis=0, return_index=True)
            keep = np.sort(first)
            inputs, labels = inputs[keep], labels[keep]
        if len(inputs) < total:
            raise ValueError(
                f"could only make {len(inputs)} distinct {self.side}x{self.side} mazes, fewer than the {total} "
                "requested; ask for fewer mazes, a larger side or a different min_path"
            )
        return inputs[:total], labels[:total]

    def _save(self, path: Path, inputs: np.ndarray, labels: np.ndarray) -> None:
        """Write the cache atomically: a temporary file in the same directory, then os.replace."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, inputs=inputs, labels=labels, key=json.dumps(self._generation_key()))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _load_cache(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Return the cached arrays when a cache file for these settings exists."""
        path = self.cache_path
        if path is None or not path.is_file():
            return None
        with np.load(path) as data:
            if json.loads(str(data["key"])) != self._generation_key():
                return None
            return data["inputs"], data["labels"]

    def prepare_data(self) -> None:
        """Generate the mazes and write the cache if it is not there yet."""
        if self.cache_path is None or self._load_cache() is not None:
            return
        inputs, labels = self._generate()
        self._save(self.cache_path, inputs, labels)
        self._arrays = (inputs, labels)

    def _load_splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Load (or generate) the mazes and split them into train / val / test in order."""
        arrays = self._arrays if self._arrays is not None else self._load_cache()
        if arrays is None:
            arrays = self._generate()
            if self.cache_path is not None:
                self._save(self.cache_path, *arrays)
        inputs, labels = arrays
        a, b = self.train_size, self.train_size + self.val_size
        return {
            "train": (inputs[:a], labels[:a]),
            "val": (inputs[a:b], labels[a:b]),
            "test": (inputs[b:], labels[b:]),
        }
