"""What every puzzle data module shares: lazy splits and loaders, CSV files on disk or from the hub, generated sets
with an atomic cache.

A concrete data module says how to load its splits (`_load_splits`) and how to wrap arrays in a dataset
(`_make_dataset`), or builds its datasets itself (`_build_datasets`); file-backed ones use `ensure_csv_files` and
`head_splits`, generated ones hold a `GeneratedArrays`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchmetrics import Metric

Arrays = tuple[np.ndarray, np.ndarray]
SPLITS = ("train", "val", "test")


class PuzzleDataset(Dataset):
    """A map-style dataset served in batches: subclasses build a whole batch of token arrays in `__getitems__`."""

    @staticmethod
    def items(inputs: torch.Tensor, labels: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per-example items {inputs [L], labels [L], puzzle_ids 0} from batched LongTensors [B, L]."""
        zero = torch.tensor(0, dtype=torch.long)
        return [{"inputs": x, "labels": y, "puzzle_ids": zero} for x, y in zip(inputs, labels)]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """Return ``{"inputs": LongTensor[L], "labels": LongTensor[L], "puzzle_ids": LongTensor scalar 0}``."""
        return self.__getitems__([int(index)])[0]


class PuzzleEvaluator(Metric):
    """A task-specific score over a whole evaluation epoch (e.g. Maze path validity, ARC voting).

    A data module offers one through ``evaluator(stage)``; the model feeds it every evaluation batch with its
    predicted tokens and halt logits, then logs ``compute()`` under ``{stage}/{name}`` and resets it, so nothing
    carries over from one evaluation to the next. States are torchmetrics states, so DDP ranks are combined.
    """

    full_state_update = False

    def update(self, batch: dict[str, torch.Tensor], predictions: torch.Tensor, halt_logits: torch.Tensor) -> None:
        """Add one batch: `predictions` are tokens [B, L] (argmax of the logits), `halt_logits` [B]."""
        raise NotImplementedError

    def compute(self) -> dict[str, torch.Tensor]:
        """Scalar scores by name over everything added since the last reset."""
        raise NotImplementedError

    def write(self, directory: Path, tag: str) -> Path | None:
        """Write an artefact of the last `compute` (e.g. a submission file) under directory; None when there is none."""
        return None


class PuzzleDataModule(L.LightningDataModule):
    """Splits loaded once, datasets built lazily, seeded shuffling for training, evaluation in order.

    Args:
        batch_size: Training batch size.
        eval_batch_size: Batch size for validation, test and prediction; None uses batch_size.
        num_workers: DataLoader worker processes.
        seed: Seed of the shuffling (and of the subclass's sampling and augmentation).
    """

    def __init__(self, batch_size: int, eval_batch_size: int | None, num_workers: int, seed: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._splits: dict[str, Arrays] | None = None
        self.datasets: dict[str, Dataset] = {}

    def _load_splits(self) -> dict[str, Arrays]:
        """{"train", "val", "test"} -> (inputs, labels) arrays [n, L] in the module's own encoding."""
        raise NotImplementedError(f"{type(self).__name__} must implement _load_splits or override _build_datasets")

    def _make_dataset(self, inputs: np.ndarray, labels: np.ndarray, train: bool) -> Dataset:
        """Wrap one split's arrays; `train` turns on augmentation where the module has any."""
        raise NotImplementedError(f"{type(self).__name__} must implement _make_dataset or override _build_datasets")

    def _build_datasets(self) -> dict[str, Dataset]:
        """The three datasets; by default the `_load_splits` arrays wrapped by `_make_dataset` (training augmented)."""
        if self._splits is None:
            self._splits = self._load_splits()
        splits = self._splits
        return {split: self._make_dataset(*splits[split], train=split == "train") for split in SPLITS}

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets once (training augmented, evaluation never)."""
        if not self.datasets:
            self.datasets = self._build_datasets()

    def _dataset(self, split: str) -> Dataset:
        if not self.datasets:
            self.setup()
        return self.datasets[split]

    def _loader(self, dataset: Dataset, batch_size: int, train: bool) -> DataLoader:
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
        """Shuffled (seeded) batches over the whole augmented training range, last partial batch dropped."""
        dataset = self._dataset("train")
        if len(dataset) < self.batch_size:
            raise ValueError(
                f"the training set has {len(dataset)} examples, fewer than batch_size={self.batch_size}, so no full "
                "batch can be made; lower batch_size or use more (or more augmented) training examples"
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

    def evaluator(self, stage: str) -> PuzzleEvaluator | None:
        """A fresh task-specific evaluator for 'val' or 'test', or None when exact accuracy says it all."""
        return None

    def check_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Raise a clear error when a checkpoint does not fit this data; called before its weights load."""


def find_csv(data_dir: Path, name: str) -> Path | None:
    """`name`.csv or `name`.csv.gz in data_dir, whichever exists."""
    for suffix in (".csv", ".csv.gz"):
        path = data_dir / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


def ensure_csv_files(data_dir: Path, download: bool, repo_id: str, title: str) -> dict[str, Path]:
    """Paths of train and test CSVs in data_dir; fetch missing ones from the Hugging Face hub when `download`.

    Raises:
        FileNotFoundError: naming the expected paths and where to get the files, when they are missing.
        ImportError: when download is asked for without the huggingface_hub package.
        RuntimeError: when the download itself fails (network), naming where to place the files by hand.
    """
    missing = [name for name in ("train", "test") if find_csv(data_dir, name) is None]
    if missing and download:
        try:
            from huggingface_hub import hf_hub_download
        except ImportError as err:
            raise ImportError(
                "download=true needs the huggingface_hub package: pip install huggingface_hub "
                f"(or place train.csv and test.csv in {data_dir} yourself)"
            ) from err
        data_dir.mkdir(parents=True, exist_ok=True)
        for name in missing:
            try:
                hf_hub_download(repo_id=repo_id, filename=f"{name}.csv", repo_type="dataset", local_dir=str(data_dir))
            except Exception as err:
                raise RuntimeError(
                    f"could not download {name}.csv of the Hugging Face dataset {repo_id} ({err}); check the "
                    f"network, or download it by hand from https://huggingface.co/datasets/{repo_id} and place "
                    f"it at {data_dir / f'{name}.csv'}"
                ) from err
        missing = [name for name in ("train", "test") if find_csv(data_dir, name) is None]
    if missing:
        expected = " and ".join(str(data_dir / f"{name}.csv") for name in missing)
        raise FileNotFoundError(
            f"{title} data not found: expected {expected} (or .csv.gz). Get train.csv and test.csv from the "
            f"Hugging Face dataset {repo_id} (https://huggingface.co/datasets/{repo_id}) into {data_dir}, "
            "or pass download=true"
        )
    return {name: find_csv(data_dir, name) for name in ("train", "test")}  # type: ignore[misc]


def head_splits(train: Arrays, test: Arrays, val_size: int, test_size: int | None, path: Path) -> dict[str, Arrays]:
    """Validation = the first val_size test rows, test = the first test_size rows (None: all)."""
    test_q, test_a = test
    if len(test_q) == 0:
        raise ValueError(f"{path} holds no examples")
    n_test = len(test_q) if test_size is None else min(test_size, len(test_q))
    return {"train": train, "val": (test_q[:val_size], test_a[:val_size]), "test": (test_q[:n_test], test_a[:n_test])}


class GeneratedArrays:
    """Generated (inputs, labels) pairs: made once, deduplicated, cached atomically as .npz keyed by their settings.

    Args:
        make: Generates `count` (inputs, labels) pairs from the seed `entropy`.
        total: How many distinct pairs to make.
        key: Every setting that changes the generated data (stored in the cache and checked on load).
        stem: Readable start of the cache file name, e.g. 'sudoku6_gmin_n20000-1000-1000_s0'.
        cache_dir: Directory for the .npz; None disables caching.
        seed: Seed of the generator.
    """

    def __init__(
        self,
        make: Callable[[int, tuple[int, ...]], Arrays],
        total: int,
        key: dict[str, Any],
        stem: str,
        cache_dir: str | None,
        seed: int,
    ) -> None:
        self.make, self.total, self.key, self.seed = make, total, key, seed
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        self.path = None if cache_dir is None else Path(cache_dir) / f"{stem}_{digest}.npz"
        self._arrays: Arrays | None = None

    def _load_cache(self) -> Arrays | None:
        if self.path is None or not self.path.is_file():
            return None
        with np.load(self.path) as data:
            if json.loads(str(data["key"])) != self.key:
                return None
            return data["inputs"], data["labels"]

    def _save(self, arrays: Arrays) -> None:
        """Write to a temporary file in the same directory, then os.replace: never a half-written cache."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, inputs=arrays[0], labels=arrays[1], key=json.dumps(self.key))
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def prepare(self) -> None:
        """Generate and cache the data unless the cache already holds it."""
        if self.path is not None and self._load_cache() is None:
            self._arrays = generate_distinct(self.make, self.total, self.seed)
            self._save(self._arrays)

    def load(self) -> Arrays:
        """The data: from memory, else the cache, else generated now (and cached)."""
        if self._arrays is None:
            self._arrays = self._load_cache()
        if self._arrays is None:
            self._arrays = generate_distinct(self.make, self.total, self.seed)
            if self.path is not None:
                self._save(self._arrays)
        return self._arrays


def split_in_order(arrays: Arrays, train_size: int, val_size: int) -> dict[str, Arrays]:
    """The first train_size pairs train, the next val_size validate, the rest test."""
    inputs, labels = arrays
    a, b = train_size, train_size + val_size
    return {"train": (inputs[:a], labels[:a]), "val": (inputs[a:b], labels[a:b]), "test": (inputs[b:], labels[b:])}


def generate_distinct(make: Callable[[int, tuple[int, ...]], Arrays], total: int, seed: int) -> Arrays:
    """Call `make(count, entropy)` until `total` distinct inputs exist (up to 20 rounds); first occurrences kept."""
    inputs: np.ndarray | None = None
    labels: np.ndarray | None = None
    for attempt in range(20):
        have = 0 if inputs is None else len(inputs)
        need = total - have
        if need <= 0:
            break
        entropy = (seed,) if attempt == 0 else (seed, attempt)
        q, a = make(need if attempt == 0 else need + need // 2 + 32, entropy)
        inputs = q if inputs is None else np.concatenate([inputs, q])
        labels = a if labels is None else np.concatenate([labels, a])
        _, first = np.unique(inputs, axis=0, return_index=True)
        keep = np.sort(first)
        inputs, labels = inputs[keep], labels[keep]
    if inputs is None or labels is None or len(inputs) < total:
        made = 0 if inputs is None else len(inputs)
        raise ValueError(
            f"could only make {made} distinct examples, fewer than the {total} requested; ask for fewer, or change "
            "the size / difficulty settings"
        )
    return inputs[:total], labels[:total]
