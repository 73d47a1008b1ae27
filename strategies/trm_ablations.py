"""Two TRM ablations of the TRM paper's Table 1, written as small strategy subclasses (the plug-in API at work)."""

from __future__ import annotations

import torch
from torch import Tensor

from recursive_reasoning.core.network import ReasoningNetwork
from strategies.base import Progress
from strategies.hrm import ContinueHalting
from strategies.trm import TRM


class TRMOneStepGradient(TRM):
    """TRM paper Table 1, "w/ 1-step gradient": TRM's recursion, but as in HRM only the last latent update and the
    last answer update carry gradient (all other module calls run under torch.no_grad)."""

    def recurse(
        self, net: ReasoningNetwork, y: Tensor, z: Tensor, x: Tensor, progress: Progress, training: bool
    ) -> tuple[Tensor, Tensor]:
        cycles, latent_steps = self.depth(progress, training)
        with torch.no_grad():
            for _ in range(cycles - 1):
                y, z = self.cycle(net, y, z, x, latent_steps)
            for _ in range(latent_steps - 1):
                z = net.latent_step(z, y, x)
        z = net.latent_step(z, y, x)  # the 1-step gradient: only these two calls carry gradient
        return net.answer_step(y, z), z

    def module_calls(self, progress: Progress, training: bool) -> tuple[int, int]:
        cycles, latent_steps = self.depth(progress, training)
        return cycles * (latent_steps + 1), 2


class TRMWithContinueACT(ContinueHalting, TRM):
    """TRM paper Table 1, "w/ ACT (continue loss, extra forward pass)": TRM's recursion with HRM's Q-learning halting
    (halt when q_halt > q_continue, plus a training-only `q_continue_loss` from one extra no-gradient segment)."""
