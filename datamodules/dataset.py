"""The dataset every puzzle data module serves: whole batches of token arrays, built at once and collated as they
are (`collate_batch`), so no step of the data path works one example at a time."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

Batch = dict[str, torch.Tensor]

INPUT_DTYPE = torch.int32
"""Inputs and puzzle ids: int32, as the reference TRM code feeds them (embedding lookups take int32 indices)."""
LABEL_DTYPE = torch.int64
"""Labels: int64, the index type of the loss's gather and of `F.cross_entropy`'s targets (no cast per step)."""
EXAMPLE_ID_DTYPE = torch.int64
"""Example ids (the row's index in its dataset, for evaluators that collect rows): int64, any dataset size fits."""
_NUMPY_DTYPES = {torch.int32: np.int32, torch.int64: np.int64}


class PuzzleDataset(Dataset):
    """A map-style dataset served in whole batches: `__getitems__(indices)` builds the batch dict itself.

    A batch is ``{"inputs": int32 [B, L], "labels": int64 [B, L], "puzzle_ids": int32 [B]}``, plus
    ``"example_ids": int64 [B]`` where an evaluator needs each row's example (ARC, reference arrays). Inputs and
    puzzle ids are int32 because they only feed embedding lookups (and numpy symmetries at test time), which take
    int32 as the reference code does; labels stay int64 because the loss gathers with them and `F.cross_entropy`
    takes int64 targets, so int64 labels cost no cast per step. The loaders pass the batch through untouched
    (`collate_batch`); `dataset[i]` is the batch of one index with its batch dimension dropped.
    """

    @staticmethod
    def batch(
        inputs: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor,
        puzzle_ids: np.ndarray | torch.Tensor | None = None,
        example_ids: np.ndarray | torch.Tensor | None = None,
    ) -> Batch:
        """The batch dict from token arrays [B, L] and per-row ids [B] (puzzle_ids None: id 0 for every row;
        example_ids None: left out), each in the dtype every loader serves."""
        batch = {
            "inputs": _tensor(inputs, INPUT_DTYPE),
            "labels": _tensor(labels, LABEL_DTYPE),
            "puzzle_ids": (torch.zeros(len(inputs), dtype=INPUT_DTYPE) if puzzle_ids is None
                           else _tensor(puzzle_ids, INPUT_DTYPE)),
        }
        if example_ids is not None:
            batch["example_ids"] = _tensor(example_ids, EXAMPLE_ID_DTYPE)
        return batch

    def __getitems__(self, indices: list[int]) -> Batch:
        """The batch of `indices` (DataLoader calls it with a whole batch's indices), built at once."""
        raise NotImplementedError(f"{type(self).__name__} must implement __getitems__ (the batch of a list of "
                                  "indices, as PuzzleDataset.batch builds it)")

    def __getitem__(self, index: int) -> Batch:
        """One example: ``{"inputs": int32 [L], "labels": int64 [L], "puzzle_ids": int32 scalar, ...}``."""
        return {key: value[0] for key, value in self.__getitems__([int(index)]).items()}


def _tensor(values: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`values` as a contiguous tensor of `dtype`, converted in one copy (none when it already is one)."""
    if isinstance(values, torch.Tensor):
        return values.to(dtype).contiguous()
    return torch.from_numpy(np.ascontiguousarray(values, dtype=_NUMPY_DTYPES[dtype]))


def collate_batch(batch: Batch) -> Batch:
    """The loaders' collate_fn: a PuzzleDataset's `__getitems__` has built the whole batch, so it passes as it is."""
    if not isinstance(batch, dict):
        raise TypeError(
            f"collate_batch expects the batch dict a PuzzleDataset's __getitems__ builds, got {type(batch).__name__}; "
            "serve the data from a PuzzleDataset subclass (or give the DataLoader a collate_fn of its own)"
        )
    return batch
