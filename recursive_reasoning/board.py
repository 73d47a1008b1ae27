"""`ReasoningBoard`: the model's reasoning, drawn into TensorBoard while it trains.

At every validation (rank 0, not in the sanity check) it adds, as images of the run's TensorBoard logger:

* `val/reasoning/puzzle{i}`: a filmstrip of validation puzzle i (the first `puzzles` of rank 0's first validation
  batch: the first of the validation set on one device), run from fresh states by the model's strategy, the decoded
  answer after every reasoning step drawn by the data module's `puzzle_kind`, changed cells marked (none for data of
  no known kind);
* `val/exact_accuracy_by_step`: exact accuracy after each reasoning step (`RecursiveReasoner.exact_accuracy_by_step`).

While training it logs, on logging steps only (`trainer.log_every_n_steps`), `train/grad_norm` (total L2 norm of
the dense gradients before Lightning clips them; the sparse puzzle-table gradient is left out, as clipping leaves it
out; under `supervision_schedule: batch` the module clips before its own optimiser steps, so the norm is clipped) and
`train/example_segments_per_s` (example-segments of the global batch over the host wall time since the last
logging step, validation excluded). Neither adds a host-device synchronisation: the norm stays a device tensor
until Lightning logs it with the step's other metrics.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from datamodules.base import PuzzleDataModule
from datamodules.kinds import PuzzleKind
from recursive_reasoning.core.losses import IGNORE_LABEL_ID
from recursive_reasoning.module import RecursiveReasoner
from recursive_reasoning.plot import Series, chart_image


class ReasoningBoard(L.Callback):
    """Filmstrips of fixed validation puzzles, the exact-accuracy-by-step curve, gradient norm and throughput.

    Args:
        puzzles: How many validation puzzles get a filmstrip (0: none).
        per_row: Frames per row of a filmstrip.
    """

    def __init__(self, puzzles: int = 4, per_row: int = 9) -> None:
        if puzzles < 0 or per_row < 1:
            raise ValueError(f"ReasoningBoard: puzzles must be >= 0 and per_row >= 1, got {puzzles} and {per_row}.")
        self.puzzles = puzzles
        self.per_row = per_row
        self._clock: float | None = None  # host time of the last logging step (None: restart the interval)
        self._example_segments = 0  # example-segments trained since then, all ranks
        self._steps_before_batch = 0

    # --- training: gradient norm and throughput ----------------------------------------------------------------

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._clock is None:
            self._clock, self._example_segments = time.perf_counter(), 0
        self._steps_before_batch = trainer.global_step

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        """Log the total norm of the dense gradients on logging steps (before Lightning clips them)."""
        if not trainer._logger_connector.should_update_logs:  # Lightning's own test, as LearningRateMonitor's
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None and not p.grad.is_sparse]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(grads)]))
            pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Count this batch's example-segments; on logging steps log their rate since the last logging step."""
        # one segment per batch under the cross-batch carry, one per optimiser step when a batch runs several
        segments = 1 if pl_module.automatic_optimization else trainer.global_step - self._steps_before_batch
        self._example_segments += batch["inputs"].shape[0] * trainer.world_size * segments
        if not trainer._logger_connector.should_update_logs:
            return
        now = time.perf_counter()
        if now > self._clock:
            rate = self._example_segments / (now - self._clock)
            pl_module.log("train/example_segments_per_s", rate, on_step=True, on_epoch=False)
        self._clock, self._example_segments = now, 0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._clock = None  # the next interval starts after validation: its time is not training time

    # --- validation: filmstrips and the curve ------------------------------------------------------------------

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        """Draw the filmstrips from the first validation batch, with the weights that validation uses."""
        if batch_idx != 0 or dataloader_idx != 0 or self.puzzles == 0:
            return
        board, data = _board(trainer), trainer.datamodule
        kind = data.puzzle_kind if isinstance(data, PuzzleDataModule) else None
        if board is None or kind is None:
            return
        count = min(self.puzzles, batch["inputs"].shape[0])
        head = {key: value[:count] for key, value in batch.items()}
        for i, image in enumerate(self.filmstrips(pl_module, head, kind)):
            board.add_image(f"val/reasoning/puzzle{i}", image, trainer.global_step, dataformats="HWC")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Add the exact accuracy after each reasoning step as a chart."""
        if trainer.sanity_checking:
            return
        accuracy = pl_module.exact_accuracy_by_step("val")  # on every rank: the metric is summed over the ranks
        board = _board(trainer)
        if board is None or not accuracy:
            return
        steps = list(range(1, len(accuracy) + 1))
        series = [Series(type(pl_module.strategy).__name__, steps, accuracy)]
        image = chart_image(series, f"Validation exact accuracy by reasoning step (step {trainer.global_step})",
                            "reasoning step", "exact accuracy", y_range=(0.0, 1.0))
        board.add_image("val/exact_accuracy_by_step", np.asarray(image), trainer.global_step, dataformats="HWC")

    def filmstrips(self, pl_module: RecursiveReasoner, batch: dict[str, Tensor], kind: PuzzleKind) -> list[np.ndarray]:
        """One filmstrip (uint8 [H, W, 3]) per puzzle of `batch`: its input, then the decoded answer after every
        reasoning step (captioned with the halt probability where the strategy has a Q head)."""
        records = list(pl_module.strategy.reasoning_steps(pl_module.net, batch, pl_module.progress()))
        tokens = torch.stack([r.logits.argmax(-1) for r in records]).cpu().numpy()  # [S, B, L]
        halt = torch.stack([r.halt_logits.float() for r in records]).sigmoid().cpu().numpy()  # [S, B]
        inputs, labels = batch["inputs"].cpu().numpy(), batch["labels"].cpu().numpy()
        labelled = labels != IGNORE_LABEL_ID
        solved = ((tokens == labels) | ~labelled).all(-1)  # [S, B]
        with_q = pl_module.strategy.has_halt_head
        images = []
        for b in range(inputs.shape[0]):
            first = int(np.argmax(solved[:, b])) + 1 if solved[:, b].any() else None
            verdict = f"solved at step {first}" if first else "not solved"
            if not labelled[b].any():
                verdict = "no label"
            images.append(kind.trace(inputs[b], tokens[:, b], halt[:, b] if with_q else None,
                                     title=f"puzzle {b} - {verdict}", per_row=self.per_row))
        return images


def _board(trainer: L.Trainer) -> Any | None:
    """The SummaryWriter of the trainer's TensorBoard logger on rank 0 outside the sanity check, else None."""
    if not trainer.is_global_zero or trainer.sanity_checking:
        return None
    loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
    return loggers[0].experiment if loggers else None
