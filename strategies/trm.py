"""TRM: one shared module, T-1 recursion cycles without gradient, then one cycle with full gradient; BCE halting."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from recursive_reasoning.core.network import ReasoningNetwork
from strategies.base import Progress, RecursionStrategy, SegmentOutput


class TRM(RecursionStrategy):
    """Tiny Recursive Model (spec section 4): a cycle is n latent updates z = f(z, y + x) then y = f(y, z).

    Args:
        cycles: T, recursion cycles per segment (H_cycles); the first T-1 run without gradient.
        latent_steps: n, latent updates per cycle (L_cycles).
        **kwargs: `RecursionStrategy`'s arguments (supervision_steps, halt_exploration, loss_type, halt_loss_weight,
            eval_early_exit); TRM's halting rule is q_halt > 0.
    """

    def __init__(self, cycles: int = 3, latent_steps: int = 6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if cycles < 1 or latent_steps < 1:
            raise ValueError(f"cycles and latent_steps must be >= 1, got {cycles} and {latent_steps}.")
        self.cycles = cycles
        self.latent_steps = latent_steps

    def depth(self, progress: Progress, training: bool) -> tuple[int, int]:
        """(T, n) used for a segment; fixed for TRM, a curriculum for subclasses such as CGAR."""
        return self.cycles, self.latent_steps

    def recurse(
        self, net: ReasoningNetwork, y: Tensor, z: Tensor, x: Tensor, progress: Progress, training: bool
    ) -> tuple[Tensor, Tensor]:
        cycles, latent_steps = self.depth(progress, training)
        with torch.no_grad():
            for _ in range(cycles - 1):
                y, z = self.cycle(net, y, z, x, latent_steps)
        return self.cycle(net, y, z, x, latent_steps)

    def module_calls(self, progress: Progress, training: bool) -> tuple[int, int]:
        cycles, latent_steps = self.depth(progress, training)
        return cycles * (latent_steps + 1), latent_steps + 1

    def halt_signal(self, out: SegmentOutput) -> Tensor:
        """Halt where q_halt > 0."""
        return out.halt_logits > 0
