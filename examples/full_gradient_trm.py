"""A user-defined recursion method, outside the rr package: TRM with backpropagation through every cycle.

The TRM paper's gradient ablation: instead of T-1 cycles without gradient and one with, all T cycles carry gradient
(memory grows with T). Use it from YAML with `class_path: full_gradient_trm.FullGradientTRM` and this folder on
PYTHONPATH (see docs/strategies.md).
"""

from __future__ import annotations

from torch import Tensor

from recursive_reasoning.core.network import ReasoningNetwork
from strategies import TRM, Progress


class FullGradientTRM(TRM):
    """TRM whose every recursion cycle carries gradient (the ablation of TRM's no-grad warm-up cycles).

    It takes TRM's arguments (cycles, latent_steps and the shared ones such as supervision_steps) unchanged.
    """

    def recurse(
        self, net: ReasoningNetwork, y: Tensor, z: Tensor, x: Tensor, progress: Progress, training: bool
    ) -> tuple[Tensor, Tensor]:
        cycles, latent_steps = self.depth(progress, training)
        for _ in range(cycles):
            y, z = self.cycle(net, y, z, x, latent_steps)
        return y, z

    def module_calls(self, progress: Progress, training: bool) -> tuple[int, int]:
        cycles, latent_steps = self.depth(progress, training)
        calls = cycles * (latent_steps + 1)
        return calls, calls
