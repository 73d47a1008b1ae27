"""One data module for every puzzle kind with a generator: seeded distinct puzzles, cached, split in order, training
batches under the kind's random symmetries (`kind.augment`)."""

from __future__ import annotations


import numpy as np

from datamodules.base import PuzzleDataModule
from datamodules.dataset import Batch, PuzzleDataset
from datamodules.generated import GeneratedArrays, GeneratedSplits
from datamodules.kinds.base import PuzzleKind

__all__ = ["GeneratedPuzzles", "KindDataset"]

_CACHE_FORMAT = 1


class KindDataset(PuzzleDataset):
    """Token arrays served in batches; with `augment`, each batch goes through `kind.augment` under a generator
    seeded by (seed, the batch's indices), so a batch is the same whenever it is drawn again (resumption, workers)."""

    def __init__(self, kind: PuzzleKind, inputs: np.ndarray, labels: np.ndarray, augment: bool, seed: int) -> None:
        if inputs.shape != labels.shape or inputs.ndim != 2 or inputs.shape[1] != kind.seq_len:
            raise ValueError(f"inputs {inputs.shape} and labels {labels.shape} must both be [n, {kind.seq_len}] for "
                             f"{kind.name} puzzles")
        self.kind, self.augment, self.seed = kind, augment, seed
        self.inputs = np.ascontiguousarray(inputs, dtype=np.int64)
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitems__(self, indices: list[int]) -> Batch:
        """The batch of `indices`, augmented as a whole when training."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range for a dataset of {len(self)} examples")
        inputs, labels = self.inputs[idx], self.labels[idx]
        if self.augment and idx.size:
            inputs, labels = self.kind.augment(inputs, labels, np.random.default_rng([self.seed, *idx.tolist()]))
        return self.batch(inputs, labels)


class GeneratedPuzzles(GeneratedSplits, PuzzleDataModule):
    """Puzzles of any kind with a generator (`kind.generate`): made once from the seed, distinct, cached as .npz,
    the first train_size for training, the next val_size for validation and the rest for testing.

    Args:
        kind: The puzzle kind, e.g. `{class_path: datamodules.kinds.futoshiki.FutoshikiKind, init_args: {size: 5}}`.
        train_size: Number of training puzzles.
        val_size: Number of validation puzzles.
        test_size: Number of test puzzles.
        augment: Put every training batch through the kind's random validity-preserving symmetries.
        cache_dir: Directory for the generated .npz (keyed by the kind and these settings); None disables caching.
        batch_size: Global training batch size (over all devices; docs/scaling.md).
        eval_batch_size: Batch size for validation, test and prediction; None uses batch_size.
        num_workers: DataLoader worker processes.
        seed: Seed of the generator, the augmentation and the shuffling.
    """

    def __init__(
        self,
        kind: PuzzleKind,
        train_size: int = 10000,
        val_size: int = 500,
        test_size: int = 1000,
        augment: bool = True,
        cache_dir: str | None = ".cache/rr",
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if not isinstance(kind, PuzzleKind):
            raise TypeError(f"kind must be a PuzzleKind (e.g. datamodules.kinds.futoshiki.FutoshikiKind), got "
                            f"{type(kind).__name__}")
        for name, value in (("train_size", train_size), ("val_size", val_size), ("test_size", test_size)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.kind = kind
        self.train_size, self.val_size, self.test_size = train_size, val_size, test_size
        self.augment = augment
        description = kind.describe()
        key = {"format": _CACHE_FORMAT, "kind": description, "train_size": train_size, "val_size": val_size,
               "test_size": test_size, "seed": seed}
        self.generated = GeneratedArrays(
            lambda count, entropy: kind.generate(count, np.random.default_rng(entropy)),
            train_size + val_size + test_size, key, f"{kind.name}_n{train_size}-{val_size}-{test_size}_s{seed}",
            cache_dir, seed,
        )
        self.save_hyperparameters(ignore=["kind"])
        self.hparams["kind"] = description  # plain data: checkpoints load with weights_only

    @property
    def vocab_size(self) -> int:
        return self.kind.vocab_size

    @property
    def seq_len(self) -> int:
        return self.kind.seq_len

    @property
    def num_puzzle_ids(self) -> int:
        """One puzzle id (0) for every example."""
        return 1

    @property
    def puzzle_kind(self) -> PuzzleKind:
        return self.kind


    def make_dataset(self, inputs: np.ndarray, labels: np.ndarray, train: bool) -> KindDataset:
        return KindDataset(self.kind, inputs, labels, self.augment and train, self.seed)
