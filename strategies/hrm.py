"""HRM: two modules, every update without gradient except the last latent and answer update; Q-learning halting."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from recursive_reasoning.core.network import ReasoningNetwork
from strategies.base import Carry, Progress, RecursionStrategy, SegmentOutput


class ContinueHalting(RecursionStrategy):
    """HRM's Q-learning halting as a mixin: halt when q_halt > q_continue, and in training a `q_continue_loss` towards
    the next segment's value (one extra no-gradient forward pass). The one implementation behind HRM and
    `strategies.trm_ablations.TRMWithContinueACT`.

    Combine it before the recursion class, e.g. `class MyTRM(ContinueHalting, TRM)`; it defines no recursion itself.
    """

    def halt_signal(self, out: SegmentOutput) -> Tensor:
        """Halt where q_halt > q_continue."""
        return out.halt_logits > out.continue_logits

    @torch.no_grad()
    def continue_target(self, net: ReasoningNetwork, carry: Carry, out: SegmentOutput, progress: Progress) -> Tensor:
        """Target for q_continue [B]: the value of the next segment, run without gradient from the new carry."""
        following = replace(carry, y=out.y.detach(), z=out.z.detach())
        after = self.run_segment(net, following, progress, training=True)
        last = carry.steps + 1 >= self.supervision_steps
        best = torch.maximum(after.halt_logits, after.continue_logits)
        return torch.sigmoid(torch.where(last, after.halt_logits, best))

    def extra_loss_terms(
        self, net: ReasoningNetwork, carry: Carry, out: SegmentOutput, progress: Progress
    ) -> dict[str, Tensor]:
        """The continue loss [B]: BCE(q_continue, `continue_target`)."""
        target = self.continue_target(net, carry, out, progress)
        loss = F.binary_cross_entropy_with_logits(out.continue_logits, target, reduction="none")
        return {"q_continue_loss": loss}


class HRM(ContinueHalting):
    """Hierarchical Reasoning Model (spec sections 4 and 5): a low-level latent module f_L and a high-level answer
    module f_H; H cycles of L latent updates followed by an answer update, with the 1-step gradient approximation.

    Halting is Q-learning: a slot halts when q_halt > q_continue; q_continue is trained towards the halt/continue
    value of the next segment, computed by a second no-gradient pass from the new carry.

    Args:
        cycles: H, high-level cycles per segment (H_cycles).
        latent_steps: L, latent updates per cycle (L_cycles).
        **kwargs: `RecursionStrategy`'s arguments (supervision_steps, halt_exploration, loss_type, halt_loss_weight:
            the weight of the halt + continue BCE terms, eval_early_exit).
    """

    def __init__(self, cycles: int = 2, latent_steps: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if cycles < 1 or latent_steps < 1:
            raise ValueError(f"cycles and latent_steps must be >= 1, got {cycles} and {latent_steps}.")
        self.cycles = cycles
        self.latent_steps = latent_steps

    def recurse(
        self, net: ReasoningNetwork, y: Tensor, z: Tensor, x: Tensor, progress: Progress, training: bool
    ) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            for cycle in range(self.cycles):
                last_cycle = cycle == self.cycles - 1
                for step in range(self.latent_steps - 1 if last_cycle else self.latent_steps):
                    z = net.latent_step(z, y, x)
                if not last_cycle:
                    y = net.answer_step(y, z)
        z = net.latent_step(z, y, x)  # the 1-step gradient: only these two calls carry gradient
        return net.answer_step(y, z), z

    def depth(self, progress: Progress, training: bool) -> tuple[int, int]:
        return self.cycles, self.latent_steps

    def module_calls(self, progress: Progress, training: bool) -> tuple[int, int]:
        return self.cycles * (self.latent_steps + 1), 2
