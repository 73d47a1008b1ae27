"""Lightning callbacks for training recipes: `DepthGrowthCallback` stabilises training when a strategy's depth grows.

RSM (spec section 4b) grows its recursion depth during training; at each change the callback can ramp the learning
rate from 0 back to the scheduler's value and scale the Adam moments once.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


class DepthGrowthCallback(L.Callback):
    """Ramp the learning rate after each depth change of the strategy and optionally scale the Adam moments.

    Each training step the callback asks the strategy for its training depth
    (`pl_module.strategy.depth(pl_module.progress(), True)`). At a change (not at the first step observed) it
    multiplies every Adam state's `exp_avg` and `exp_avg_sq` by `moment_scale_on_growth` once; for the next
    `lr_ramp_steps` optimiser steps it multiplies every param group's lr by k / lr_ramp_steps (k = steps since the
    change, so the ramp starts at 0) and restores the scheduler's value after the step.

    Args:
        lr_ramp_steps: Length of the lr ramp after each depth change, in optimiser steps; 0 disables it.
        moment_scale_on_growth: Factor applied to the Adam moments at a depth change; None leaves them alone.
    """

    def __init__(self, lr_ramp_steps: int = 0, moment_scale_on_growth: float | None = None) -> None:
        if lr_ramp_steps < 0:
            raise ValueError(f"lr_ramp_steps must be >= 0, got {lr_ramp_steps}.")
        if moment_scale_on_growth is not None and moment_scale_on_growth < 0:
            raise ValueError(f"moment_scale_on_growth must be >= 0, got {moment_scale_on_growth}.")
        self.lr_ramp_steps = lr_ramp_steps
        self.moment_scale_on_growth = moment_scale_on_growth
        self.depth: tuple[int, ...] | None = None
        self.change_step: int | None = None
        self._ramped: list[tuple[dict[str, Any], float, float]] = []

    def ramp_factor(self, step: int) -> float:
        """The lr multiplier at optimiser step `step`: k / lr_ramp_steps for k < lr_ramp_steps steps after a change."""
        if self.change_step is None or self.lr_ramp_steps == 0:
            return 1.0
        return min(1.0, max(0, step - self.change_step) / self.lr_ramp_steps)

    @staticmethod
    def scale_moments(optimizer: torch.optim.Optimizer, factor: float) -> None:
        """Multiply every parameter state's `exp_avg` and `exp_avg_sq` by `factor` in place."""
        for state in optimizer.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].mul_(factor)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        depth = tuple(pl_module.strategy.depth(pl_module.progress(), True))
        if self.depth is not None and depth != self.depth:
            self.change_step = step
            if self.moment_scale_on_growth is not None:
                for optimizer in trainer.optimizers:
                    self.scale_moments(optimizer, self.moment_scale_on_growth)
        self.depth = depth
        factor = self.ramp_factor(step)
        self._ramped = []
        if factor == 1.0:
            return
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                original = group["lr"]
                group["lr"] = original * factor
                self._ramped.append((group, original, group["lr"]))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for group, original, ramped in self._ramped:
            if group["lr"] == ramped:  # a step scheduler has already written its next value: keep that one
                group["lr"] = original
        self._ramped = []

    def state_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "change_step": self.change_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        depth = state_dict.get("depth")
        self.depth = tuple(depth) if depth is not None else None
        self.change_step = state_dict.get("change_step")
