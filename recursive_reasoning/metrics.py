"""The puzzle metrics every evaluation logs: token and exact accuracy, q_halt accuracy and steps, over labelled rows."""

from __future__ import annotations

from torch import Tensor, nn
from torchmetrics import MeanMetric

from recursive_reasoning.core.losses import IGNORE_LABEL_ID

__all__ = ["PuzzleMetrics"]


class PuzzleMetrics(nn.Module):
    """Means over finished examples with at least one label: token accuracy, exact accuracy, q_halt accuracy, steps.

    Rows without a valid label (padding) are left out, as in both reference codes: such a row would count as exactly
    right and pull every mean towards it.
    """

    names = ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps")

    def __init__(self) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict({name: MeanMetric() for name in self.names})

    @staticmethod
    def labelled(labels: Tensor) -> Tensor:
        """[B] bool: the rows of labels [B, L] with at least one valid label, the only ones the metrics count."""
        return (labels != IGNORE_LABEL_ID).any(-1)

    @staticmethod
    def values(token_accuracy: Tensor, exact: Tensor, halt_logits: Tensor, steps: Tensor) -> dict[str, Tensor]:
        """Per-example metric values [B'] of finished examples."""
        return {
            "accuracy": token_accuracy.float(),
            "exact_accuracy": exact.float(),
            "q_halt_accuracy": ((halt_logits >= 0) == exact).float(),
            "steps": steps.float(),
        }

    def update(self, token_accuracy: Tensor, exact: Tensor, halt_logits: Tensor, steps: Tensor, labels: Tensor) -> None:
        """Add a batch of finished examples (tensors [B'], labels [B', L]); rows without a valid label are skipped."""
        counted = self.labelled(labels)
        values = self.values(token_accuracy[counted], exact[counted], halt_logits[counted], steps[counted])
        for name, value in values.items():
            self.metrics[name].update(value)
