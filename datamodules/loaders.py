"""Training batches that are the same on any number of devices and resume mid-epoch: the global-batch sampler and
the resumable loader."""

from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler


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
