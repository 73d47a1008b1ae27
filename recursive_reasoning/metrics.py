"""The puzzle metrics every evaluation logs (token and exact accuracy, q_halt accuracy and steps, over labelled rows),
and `TrainingSums`, the same metrics of training summed on the device between logging steps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from recursive_reasoning.core.losses import IGNORE_LABEL_ID

__all__ = ["PuzzleMetrics", "TrainingSums"]


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


class TrainingSums:
    """The training metrics of the steps since the last logging step, summed on the device: no host read and no
    boolean-mask indexing per step, one reduction over the ranks and one copy to the host when they are logged.

    Per step it adds the masked sums of `PuzzleMetrics.values` over the finished rows, their count, and the loss terms;
    `means` turns them into the logged values: means over the finished rows of every rank (none when no row
    finished), `finished` (their count), and each loss term's mean over the steps and ranks.
    """

    def __init__(self) -> None:
        self.sums: Tensor | None = None
        self.terms: tuple[str, ...] = ()
        self.steps = 0

    def add(self, finished: Tensor, token_accuracy: Tensor, exact: Tensor, halt_logits: Tensor, steps: Tensor,
            terms: Tensor, names: tuple[str, ...]) -> None:
        """Add one step: finished [B] bool selects the rows counted, the other tensors are [B]; terms [k] float32
        are the loss terms named by `names`."""
        weights = finished.to(torch.float32)
        values = torch.stack(list(PuzzleMetrics.values(token_accuracy, exact, halt_logits, steps).values()))
        row = torch.cat([values @ weights, weights.sum().unsqueeze(0), terms])
        if self.sums is None or names != self.terms:
            self.sums, self.terms = row, names  # a new tensor (cat): summed into in place from the next step
        else:
            self.sums += row
        self.steps += 1

    def means(self, reduce: Callable[[Tensor], Tensor], world_size: int, flags: Tensor | None = None
              ) -> tuple[dict[str, Tensor], Tensor | None]:
        """The logged values (host tensors) of the steps added since the last call, then start again; `reduce` sums
        a tensor over the ranks (every rank must call this at the same step). `flags` [k] (e.g. `FiniteGuard.flag`)
        are summed and read in the same reduction and copy, and returned (host) beside the values."""
        if self.sums is None or self.steps == 0:
            return {}, None if flags is None else reduce(flags).cpu()
        if flags is None:
            sums = reduce(self.sums).cpu()
        else:
            sums = reduce(torch.cat([self.sums, flags.to(self.sums)])).cpu()
            sums, flags = sums[: -flags.numel()], sums[-flags.numel():]
        metrics = len(PuzzleMetrics.names)
        count = sums[metrics]
        logged = {"finished": count}
        if count > 0:
            logged.update({name: sums[i] / count for i, name in enumerate(PuzzleMetrics.names)})
        logged.update({name: sums[metrics + 1 + i] / (self.steps * world_size) for i, name in enumerate(self.terms)})
        self.sums, self.steps = None, 0  # not zeroed in place: on a CPU, `sums` may be that very tensor
        return logged, flags
