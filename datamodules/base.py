"""The puzzle data-module contract (`PuzzleDataModule`): lazy splits, seeded global-batch training loaders that
resume mid-epoch, plain evaluation loaders, and what the model and the commands read from a data module.

A concrete data module says how to load its splits (`load_splits`) and how to wrap arrays in a dataset
(`make_dataset`), or builds its datasets itself (`build_datasets`). Its pieces live beside it: `dataset`,
`evaluator`, `loaders`, `sources` (CSV files and the hub) and `generated` (seeded sets with a cache).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from datamodules.dataset import PuzzleDataset, collate_batch
from datamodules.evaluator import PuzzleEvaluator
from datamodules.kinds.base import PuzzleKind
from datamodules.loaders import GlobalBatchSampler, ResumableDataLoader

Arrays = tuple[np.ndarray, np.ndarray]
SPLITS = ("train", "val", "test")


class PuzzleDataModule(L.LightningDataModule, ABC):
    """Splits loaded once, datasets built lazily, seeded shuffling for training, evaluation in order.

    `batch_size` is the global training batch, summed over all devices (as the reference code's global_batch_size):
    with W devices (data-parallel ranks over all nodes) each takes batch_size / W examples per step, so a recipe
    trains the same on any number of devices. The training loader's `GlobalBatchSampler` gives rank r the r-th
    contiguous slice of every global batch of one seeded permutation per epoch, and `ResumableDataLoader` puts the
    position inside the epoch into checkpoints, so a resumed run continues with the next batch. Evaluation loaders
    are plain, in order, and `eval_batch_size` is per device (Lightning's distributed sampler splits them). A
    `PuzzleDataset` builds each batch whole (int32 inputs and puzzle ids, int64 labels) and every loader passes it
    through as it is (`collate_batch`), so no step of the data path works one example at a time.

    A subclass declares the task's shape (`vocab_size`, `seq_len`, `num_puzzle_ids`: `rr fit` links them to the
    model) and its `puzzle_kind`, and may offer an `evaluator` and a `check_checkpoint`; the model calls exactly
    these, so a new data module is one subclass with no other code to edit.

    Args:
        batch_size: Global training batch size (over all devices); must be divisible by the number of devices.
        eval_batch_size: Batch size per device for validation, test and prediction; None uses batch_size.
        num_workers: DataLoader worker processes (per device).
        seed: Seed of the shuffling (and of the subclass's sampling and augmentation).
    """

    def __init__(self, batch_size: int, eval_batch_size: int | None, num_workers: int, seed: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}; leave it out (None) to use "
                             "batch_size")
        self.batch_size = batch_size
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._splits: dict[str, Arrays] | None = None
        self.datasets: dict[str, Dataset] = {}

    # --- the contract: what the model, the command line and `rr solve` read --------------------------------------

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids (0..vocab_size-1) of this data's encoding; `rr fit` links it to the model."""

    @property
    @abstractmethod
    def seq_len(self) -> int:
        """Tokens per example (inputs and labels alike); `rr fit` links it to the model."""

    @property
    @abstractmethod
    def num_puzzle_ids(self) -> int:
        """Rows of the model's puzzle-embedding table: one more than the largest puzzle id served (1 when every
        example has id 0); `rr fit` links it to the model."""

    @property
    @abstractmethod
    def puzzle_kind(self) -> PuzzleKind | None:
        """How this data's puzzles are read, written, checked and drawn; saved in every checkpoint, so `rr solve`
        knows what a model solves. None for plain tokens of no known kind."""

    # --- extension hooks: implement load_splits and make_dataset, or build_datasets ------------------------------

    def load_splits(self) -> dict[str, Arrays]:
        """{"train", "val", "test"} -> (inputs, labels) arrays [n, L] in the module's own encoding."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_splits (with make_dataset) or "
                                  "override build_datasets")

    def make_dataset(self, inputs: np.ndarray, labels: np.ndarray, train: bool) -> Dataset:
        """Wrap one split's arrays; `train` turns on augmentation where the module has any."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_dataset (with load_splits) or "
                                  "override build_datasets")

    def build_datasets(self) -> dict[str, Dataset]:
        """The three datasets; by default the `load_splits` arrays wrapped by `make_dataset` (training augmented)."""
        if self._splits is None:
            self._splits = self.load_splits()
        splits = self._splits
        return {split: self.make_dataset(*splits[split], train=split == "train") for split in SPLITS}

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets once (training augmented, evaluation never)."""
        if not self.datasets:
            self.datasets = self.build_datasets()

    def _dataset(self, split: str) -> Dataset:
        if not self.datasets:
            self.setup()
        return self.datasets[split]

    def _loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        """An evaluation loader: in order, every example (Lightning adds its distributed sampler under DDP)."""
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, pin_memory=self._pin_memory(),
                          collate_fn=self._collate(dataset))

    @staticmethod
    def _collate(dataset: Dataset) -> Callable[[Any], Any] | None:
        """A PuzzleDataset builds whole batches, which pass through untouched (`collate_batch`); any other dataset
        gives per-example items, which PyTorch's default collate (None) stacks."""
        return collate_batch if isinstance(dataset, PuzzleDataset) else None

    def _pin_memory(self) -> bool:
        """Pinned host batches (an asynchronous copy to the device) when the trainer runs on CUDA, never on a CPU."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _ranks(self) -> tuple[int, int]:
        """(number of data-parallel ranks, this process's global rank): the trainer's, else torch.distributed's."""
        trainer = self.trainer
        if trainer is not None:
            return trainer.world_size, trainer.global_rank
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def train_dataloader(self) -> ResumableDataLoader:
        """This rank's slice of every global batch of a seeded shuffle of the augmented training range (last partial
        global batch dropped); resumable mid-epoch from a checkpoint."""
        world_size, rank = self._ranks()
        sampler = GlobalBatchSampler(self._dataset("train"), self.batch_size, world_size, rank, self.seed)
        return ResumableDataLoader(
            sampler.dataset,
            batch_size=sampler.local_batch_size,
            sampler=sampler,
            drop_last=True,
            generator=torch.Generator().manual_seed(self.seed),  # the worker seeds; never the global RNG
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self._pin_memory(),
            collate_fn=self._collate(sampler.dataset),
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches in order, never augmented."""
        return self._loader(self._dataset("val"), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """Test batches in order, never augmented."""
        return self._loader(self._dataset("test"), self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        """Prediction runs over the test data."""
        return self.test_dataloader()

    def evaluator(self, stage: str) -> PuzzleEvaluator | None:
        """A fresh task-specific evaluator for 'val' or 'test', or None when exact accuracy says it all."""
        return None

    def check_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Raise a clear error when a checkpoint does not fit this data; called before its weights load."""

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the puzzle kind's description, so a checkpoint knows what it solves."""
        kind = self.puzzle_kind
        return {"puzzle_kind": kind.describe()} if kind is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the data is rebuilt from the configuration (`check_checkpoint` guards mismatches)."""
