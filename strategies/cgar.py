"""CGAR: TRM with a progressive depth curriculum and hierarchical supervision weighting (spec section 4b)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch
from torch import Tensor

from recursive_reasoning.core.network import ReasoningNetwork
from strategies.base import Batch, Carry, Progress, SegmentOutput
from strategies.trm import TRM


def _stages(
    cycles: int,
    latent_steps: int,
    stage_bounds: tuple[float, ...],
    stage_depths: list[tuple[int, int]] | None,
) -> list[tuple[int, int]]:
    """Validate a curriculum and return its (T, n) per stage; None gives the spec's thirds of the full depth."""
    bounds = tuple(float(b) for b in stage_bounds)
    if any(not 0.0 < b < 1.0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
        raise ValueError(f"stage_bounds must be strictly increasing fractions in (0, 1), got {list(bounds)}.")
    if stage_depths is None:
        if len(bounds) != 2:
            raise ValueError(
                f"the default stage_depths have 3 stages and need 2 stage_bounds, got {len(bounds)}; "
                "give stage_depths explicitly for another number of stages."
            )
        return [
            (max(1, math.ceil(cycles / 3)), max(2, math.ceil(latent_steps / 3))),
            (math.ceil(2 * cycles / 3), math.ceil(2 * latent_steps / 3)),
            (cycles, latent_steps),
        ]
    depths = [(int(t), int(n)) for t, n in stage_depths]
    if len(depths) != len(bounds) + 1:
        raise ValueError(
            f"stage_depths needs one (T, n) per stage, len(stage_bounds) + 1 = {len(bounds) + 1}, got {len(depths)}."
        )
    if any(t < 1 or n < 1 for t, n in depths):
        raise ValueError(f"every stage needs T >= 1 and n >= 1, got {depths}.")
    return depths


def curriculum_call_fraction(
    cycles: int,
    latent_steps: int,
    stage_bounds: tuple[float, ...] = (0.3, 0.6),
    stage_depths: list[tuple[int, int]] | None = None,
) -> float:
    """Module calls per segment, T * (n + 1), averaged over training by stage length, relative to the full depth.

    With the defaults and (T, n) = (3, 6): (0.3 * 3 + 0.3 * 10 + 0.4 * 21) / 21 = 0.586, i.e. 41.4% fewer FLOPs.
    """
    depths = _stages(cycles, latent_steps, stage_bounds, stage_depths)
    edges = (0.0, *(float(b) for b in stage_bounds), 1.0)
    used = sum((end - start) * t * (n + 1) for start, end, (t, n) in zip(edges, edges[1:], depths))
    return used / (cycles * (latent_steps + 1))


@dataclass
class CGARCarry(Carry):
    """A carry that also keeps every slot's step counter from before the last refresh ('repo' weighting).

    Attributes:
        steps_before_refresh: [B] int32, `steps` as the slots entered the last refresh, so the slots it restarted
            keep their finished example's count; after `advance` (no refresh yet) simply `steps`.
    """

    steps_before_refresh: Tensor


class CGAR(TRM):
    """Curriculum-Guided Adaptive Recursion: TRM whose depth grows with training and whose early segments weigh more.

    The depth (T, n) of a training segment follows the stage of training progress (needs a known total, i.e.
    trainer.max_steps). The loss of supervision step k = steps + 1 (each slot's own segment index since its reset)
    is weighted per slot ('paper'), or the whole batch by one scalar as in the public code ('repo'). The carry is a
    `CGARCarry`, which keeps the step counters from before each refresh for 'repo'.

    Args:
        cycles: T, the full recursion cycles per segment (the last stage and evaluation).
        latent_steps: n, the full latent updates per cycle.
        stage_bounds: Fractions of training, strictly increasing in (0, 1), where the next stage starts.
        stage_depths: (T, n) of each stage, one more than stage_bounds; None gives (max(1, ceil(T/3)),
            max(2, ceil(n/3))), (ceil(2T/3), ceil(2n/3)), (T, n).
        eval_full_depth: Evaluate at the full (T, n); if False, at the stage of the current progress.
        weighting: 'paper': slot weight lambda^(k-1) / sum_{j=1..N_sup} lambda^(j-1); 'repo': the public code's
            one unnormalised weight lambda^int(mean steps) for the whole batch (Kaleemullahqasim/CGAR,
            ACTLossHead_CGAR.forward), steps the counters of the carry before the refresh: segments already run,
            from 0, the finished counts of the slots that restart included (the loss, and so the weight, is computed
            in training only); 'none': unweighted, as TRM.
        supervision_lambda: lambda, the decay of the weight per supervision step.
        **kwargs: `RecursionStrategy`'s arguments (supervision_steps, halt_exploration, loss_type, halt_loss_weight,
            eval_early_exit).
    """

    def __init__(
        self,
        cycles: int = 3,
        latent_steps: int = 6,
        stage_bounds: tuple[float, ...] = (0.3, 0.6),
        stage_depths: list[tuple[int, int]] | None = None,
        eval_full_depth: bool = True,
        weighting: Literal["paper", "repo", "none"] = "paper",
        supervision_lambda: float = 0.7,
        **kwargs: Any,
    ) -> None:
        super().__init__(cycles, latent_steps, **kwargs)
        if weighting not in ("paper", "repo", "none"):
            raise ValueError(f"unknown weighting {weighting!r}; choose 'paper', 'repo' or 'none'.")
        if supervision_lambda <= 0:
            raise ValueError(f"supervision_lambda must be > 0, got {supervision_lambda}.")
        self.stage_bounds = tuple(float(b) for b in stage_bounds)
        self.stage_depths = _stages(cycles, latent_steps, self.stage_bounds, stage_depths)
        self.eval_full_depth = eval_full_depth
        self.weighting = weighting
        self.supervision_lambda = supervision_lambda

    def depth(self, progress: Progress, training: bool) -> tuple[int, int]:
        """(T, n) of the current stage in training (and at evaluation unless eval_full_depth); else the full depth."""
        if not training and self.eval_full_depth:
            return self.cycles, self.latent_steps
        fraction = progress.fraction
        return self.stage_depths[sum(fraction >= b for b in self.stage_bounds)]

    def initial_carry(self, net: ReasoningNetwork, batch: Batch) -> CGARCarry:
        """TRM's initial carry (every slot halted at step 0) as a `CGARCarry`."""
        carry = super().initial_carry(net, batch)
        return _with_counts(carry, carry.steps)

    def refresh(self, net: ReasoningNetwork, carry: Carry, batch: Batch) -> CGARCarry:
        """TRM's refresh, remembering the step counters the slots had before it (stale ones of halted slots too)."""
        return _with_counts(super().refresh(net, carry, batch), carry.steps)

    def advance(self, carry: Carry, out: SegmentOutput, training: bool) -> CGARCarry:
        """TRM's advance; the counters before the next refresh are the new ones (a segment without refresh, as in
        the in-step schedule, sees them unchanged)."""
        advanced = super().advance(carry, out, training)
        return _with_counts(advanced, advanced.steps)

    def sample_weights(self, carry: Carry, progress: Progress) -> Tensor | None:
        if self.weighting == "none":
            return None
        if self.weighting == "paper":
            k = carry.steps.to(torch.float32) + 1
            z = sum(self.supervision_lambda**j for j in range(self.supervision_steps))
            return self.supervision_lambda ** (k - 1) / z
        if not isinstance(carry, CGARCarry):
            raise TypeError(
                "CGAR(weighting='repo') weighs by the step counters from before the refresh, which only a carry "
                f"made by CGAR.refresh keeps; got a {type(carry).__name__}. Refresh the carry with this strategy."
            )
        mean_step = carry.steps_before_refresh.to(torch.float32).mean().item()
        return torch.full(carry.steps.shape, self.supervision_lambda ** int(mean_step), device=carry.steps.device)

    def flop_reduction(self) -> float:
        """Fraction of full-depth training module calls this curriculum saves (0.414 for the defaults)."""
        return 1.0 - curriculum_call_fraction(self.cycles, self.latent_steps, self.stage_bounds, self.stage_depths)


def _with_counts(carry: Carry, steps_before_refresh: Tensor) -> CGARCarry:
    """`carry` as a CGARCarry whose counters before the refresh are `steps_before_refresh`."""
    if isinstance(carry, CGARCarry):
        return replace(carry, steps_before_refresh=steps_before_refresh)
    base = {f.name: getattr(carry, f.name) for f in fields(Carry)}
    return CGARCarry(**base, steps_before_refresh=steps_before_refresh)
