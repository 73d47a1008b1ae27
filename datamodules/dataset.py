"""The dataset every puzzle data module serves: batches of token arrays built whole."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


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
