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
from collections.abc import Callable, Iterator, Sized
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchmetrics import Metric

from datamodules.formats import PuzzleFormat

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


class GlobalBatchSampler(DistributedSampler):
    """The training order over all ranks: a seeded permutation per epoch, cut into global batches of
    `global_batch_size`; rank r takes the r-th contiguous slice of `global_batch_size / num_replicas` examples of
    every global batch (the last partial global batch is dropped).

    So W ranks together train on exactly the batches one process would, each slot of the single-process batch on a
    fixed rank, and the order does not depend on the number of devices. With one rank the stream is the one that
    `DataLoader(shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))` gives under Lightning
    (per epoch: one int64 draw for the loader's worker seed, then `randperm`), so single-process runs see the same
    batches as before this sampler existed. It subclasses `DistributedSampler` only so that Lightning keeps it: under
    DDP Lightning replaces any other sampler of a training DataLoader with its own interleaved one.

    Its position can be moved to the middle of an epoch (`resume`), which `ResumableDataLoader` uses to continue a
    checkpointed run with the next batch.

    Args:
        dataset: The training dataset (only its length is used).
        global_batch_size: Examples per optimiser step over all ranks (per micro-batch with gradient accumulation).
        num_replicas: Number of ranks (devices over all nodes).
        rank: This process's global rank.
        seed: Seed of the permutations.
    """

    def __init__(self, dataset: Sized, global_batch_size: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank {rank} of {num_replicas}")
        if global_batch_size < 1 or global_batch_size % num_replicas:
            raise ValueError(
                f"batch_size={global_batch_size} is the global batch (over all devices) and must be a positive "
                f"multiple of the number of devices ({num_replicas}); choose a batch_size divisible by {num_replicas}"
            )
        if len(dataset) < global_batch_size:
            raise ValueError(
                f"the training set has {len(dataset)} examples, fewer than batch_size={global_batch_size}, so no full "
                "batch can be made; lower batch_size or use more (or more augmented) training examples"
            )
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // num_replicas
        self.dataset_size = len(dataset)
        self.batches_per_epoch = self.dataset_size // global_batch_size
        self.num_samples = self.batches_per_epoch * self.local_batch_size
        self.total_size = self.batches_per_epoch * global_batch_size
        self.start_batch = 0  # global batches of `epoch` to skip at the next iteration (a resumed epoch)
        self._generator: torch.Generator | None = None
        self._generated: tuple[int, torch.Tensor] | None = None  # (epoch, its permutation), the last one drawn

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next iteration (Lightning calls it before every epoch); a new one starts at 0."""
        if epoch != self.epoch:
            self.start_batch = 0
        self.epoch = epoch

    def resume(self, epoch: int, batch: int) -> None:
        """Make the next iteration continue `epoch` with its global batch number `batch` (0-based)."""
        if not 0 <= batch <= self.batches_per_epoch:
            raise ValueError(f"batch {batch} is outside the epoch's {self.batches_per_epoch} global batches")
        self.epoch, self.start_batch = epoch, batch

    def permutation(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of the dataset; epochs are drawn in turn from one generator seeded with `seed`."""
        if self._generated is None or epoch < self._generated[0]:
            self._generator, self._generated = torch.Generator().manual_seed(self.seed), None
        assert self._generator is not None
        while self._generated is None or self._generated[0] < epoch:
            drawn = -1 if self._generated is None else self._generated[0]
            torch.empty((), dtype=torch.int64).random_(generator=self._generator)  # the loader's worker-seed draw
            self._generated = (drawn + 1, torch.randperm(self.dataset_size, generator=self._generator))
        return self._generated[1]

    def __iter__(self) -> Iterator[int]:
        start, self.start_batch = self.start_batch, 0
        batches = self.permutation(self.epoch)[: self.total_size].view(self.batches_per_epoch, self.global_batch_size)
        lo = self.rank * self.local_batch_size
        return iter(batches[start:, lo : lo + self.local_batch_size].reshape(-1).tolist())

    def __len__(self) -> int:
        """Indices this rank takes in a whole epoch (a resumed epoch yields only those of its remaining batches)."""
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A training DataLoader whose position survives a checkpoint.

    Lightning saves the `state_dict` of a stateful training loader in the checkpoint's loop state and gives it back
    through `load_state_dict` when fitting resumes; a plain map-style DataLoader would restart its epoch. The state
    is (epoch, global batches served), counted as batches are handed to the training loop (not as worker processes
    prefetch them), and with a `GlobalBatchSampler` the position means the same on any number of devices. With
    another sampler (e.g. Lightning's `overfit_batches` replaces it) the loader is a plain DataLoader.
    """

    def __iter__(self) -> Iterator[Any]:
        sampler = self.sampler
        if not isinstance(sampler, GlobalBatchSampler):
            yield from super().__iter__()
            return
        epoch, served = sampler.epoch, sampler.start_batch
        self._position = (epoch, served)
        for batch in super().__iter__():
            served += 1
            self._position = (epoch, served)
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """{epoch, batch (global batches of the epoch served), global_batch_size, dataset_size, seed}."""
        sampler = self.sampler
        if not isinstance(sampler, GlobalBatchSampler):
            return {}
        epoch, batch = getattr(self, "_position", (sampler.epoch, sampler.start_batch))
        return {"epoch": epoch, "batch": batch, "global_batch_size": sampler.global_batch_size,
                "dataset_size": sampler.dataset_size, "seed": sampler.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue at the saved position; a different batch size, data size or seed restarts the epoch (warned)."""
        sampler = self.sampler
        if not isinstance(sampler, GlobalBatchSampler) or not state_dict:
            return
        ours = {"global_batch_size": sampler.global_batch_size, "dataset_size": sampler.dataset_size,
                "seed": sampler.seed}
        changed = {k: (state_dict.get(k), v) for k, v in ours.items() if state_dict.get(k) != v}
        if changed:
            rank_zero_warn(
                "the checkpoint's data position does not apply to this data ("
                + ", ".join(f"{k}: checkpoint {a}, now {b}" for k, (a, b) in changed.items())
                + "); the resumed epoch starts from its first batch, so the data order differs from the original run"
            )
            return
        sampler.resume(int(state_dict["epoch"]), int(state_dict["batch"]))
        self._position = (sampler.epoch, sampler.start_batch)


class PuzzleDataModule(L.LightningDataModule):
    """Splits loaded once, datasets built lazily, seeded shuffling for training, evaluation in order.

    `batch_size` is the global training batch, summed over all devices (as the reference code's global_batch_size):
    with W devices (data-parallel ranks over all nodes) each takes batch_size / W examples per step, so a recipe
    trains the same on any number of devices. The training loader's `GlobalBatchSampler` gives rank r the r-th
    contiguous slice of every global batch of one seeded permutation per epoch, and `ResumableDataLoader` puts the
    position inside the epoch into checkpoints, so a resumed run continues with the next batch. Evaluation loaders
    are plain, in order, and `eval_batch_size` is per device (Lightning's distributed sampler splits them).

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

    def _loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        """An evaluation loader: in order, every example (Lightning adds its distributed sampler under DDP)."""
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

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

    def puzzle_format(self) -> PuzzleFormat | None:
        """How this data's puzzles are read, written, checked and drawn (`rr solve` uses it); None if unknown."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the puzzle format's description, so a checkpoint knows what it solves."""
        fmt = self.puzzle_format()
        return {"puzzle_format": fmt.describe()} if fmt is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the data is rebuilt from the configuration (`check_checkpoint` guards mismatches)."""


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


def save_npz_atomic(path: Path, **arrays: Any) -> None:
    """Write an .npz to a temporary file in the same directory, then os.replace: never a half-written cache."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class GeneratedArrays:
    """Generated (inputs, labels) pairs: made once, deduplicated, cached atomically as .npz keyed by their settings.

    Args:
        make: Generates `count` (inputs, labels) pairs from the seed `entropy`.
        total: How many distinct pairs to make.
        key: Every setting that changes the generated data (stored in the cache and checked on load).
        stem: Readable start of the cache file name, e.g. 'sudoku6_gmin_n20000-1000-1000_s0'.
        cache_dir: Directory for the .npz; None disables caching.
        seed: Seed of the generator.
        distinct: What must be distinct across all pairs: the 'inputs' (default) or the 'labels'.
    """

    def __init__(
        self,
        make: Callable[[int, tuple[int, ...]], Arrays],
        total: int,
        key: dict[str, Any],
        stem: str,
        cache_dir: str | None,
        seed: int,
        distinct: Literal["inputs", "labels"] = "inputs",
    ) -> None:
        self.make, self.total, self.key, self.seed, self.distinct = make, total, key, seed, distinct
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
        """Cache the arrays with their key (atomically)."""
        assert self.path is not None
        save_npz_atomic(self.path, inputs=arrays[0], labels=arrays[1], key=json.dumps(self.key))

    def prepare(self) -> None:
        """Generate and cache the data unless the cache already holds it."""
        if self.path is not None and self._load_cache() is None:
            self._arrays = generate_distinct(self.make, self.total, self.seed, self.distinct)
            self._save(self._arrays)

    def load(self) -> Arrays:
        """The data: from memory, else the cache, else generated now (and cached)."""
        if self._arrays is None:
            self._arrays = self._load_cache()
        if self._arrays is None:
            self._arrays = generate_distinct(self.make, self.total, self.seed, self.distinct)
            if self.path is not None:
                self._save(self._arrays)
        return self._arrays


def split_in_order(arrays: Arrays, train_size: int, val_size: int) -> dict[str, Arrays]:
    """The first train_size pairs train, the next val_size validate, the rest test."""
    inputs, labels = arrays
    a, b = train_size, train_size + val_size
    return {"train": (inputs[:a], labels[:a]), "val": (inputs[a:b], labels[a:b]), "test": (inputs[b:], labels[b:])}


def generate_distinct(
    make: Callable[[int, tuple[int, ...]], Arrays], total: int, seed: int, by: Literal["inputs", "labels"] = "inputs"
) -> Arrays:
    """Call `make(count, entropy)` until `total` pairs with distinct `by` rows exist (up to 20 rounds); first
    occurrences kept. `by="labels"` makes the answers distinct (e.g. no two puzzles share a solution grid)."""
    if by not in ("inputs", "labels"):
        raise ValueError(f"by must be 'inputs' or 'labels', got {by!r}")
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
        _, first = np.unique(inputs if by == "inputs" else labels, axis=0, return_index=True)
        keep = np.sort(first)
        inputs, labels = inputs[keep], labels[keep]
    if inputs is None or labels is None or len(inputs) < total:
        made = 0 if inputs is None else len(inputs)
        raise ValueError(
            f"could only make {made} examples with distinct {by}, fewer than the {total} requested; ask for fewer, "
            "or change the size / difficulty settings"
        )
    return inputs[:total], labels[:total]
