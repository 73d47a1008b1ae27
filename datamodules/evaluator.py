"""The task-specific score a data module can add to exact accuracy (Maze path validity, ARC voting)."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
from torchmetrics import Metric


class PuzzleEvaluator(Metric):
    """A task-specific score over a whole evaluation epoch (e.g. Maze path validity, ARC voting).

    A data module offers one through ``evaluator(stage)``; the model feeds it every evaluation batch with its
    predicted tokens and halt logits, then logs ``compute()`` under ``{stage}/{name}`` and resets it, so nothing
    carries over from one evaluation to the next. States are torchmetrics states, so DDP ranks are combined.
    """

    full_state_update = False
    progress_bar: ClassVar[tuple[str, ...]] = ()
    """Names of the `compute` scores the model also shows on the progress bar (the headline ones)."""

    @abstractmethod
    def update(self, batch: dict[str, torch.Tensor], predictions: torch.Tensor, halt_logits: torch.Tensor) -> None:
        """Add one batch: `predictions` are tokens [B, L] (argmax of the logits), `halt_logits` [B]."""

    @abstractmethod
    def compute(self) -> dict[str, torch.Tensor]:
        """Scalar scores by name over everything added since the last reset."""

    def write(self, directory: Path, tag: str) -> Path | None:
        """Write an artefact of the last `compute` (e.g. a submission file) under directory; None when there is none."""
        return None
