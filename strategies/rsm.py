"""RSM (Recursive Stem Model, spec section 4b): detached warm-up, loss on the final answer only, growing depth.

RSM has no deep supervision, no ACT and no Q head. It fits the module's loop as a strategy with one supervision
segment per example (`supervision_steps` is fixed to 1, so every slot halts after its segment and restarts from the
initial states at the next training step); the segment runs H outer steps, each L latent updates
`z = f(z, y + x)` then one answer update `y = f(y, z)`.

Training: the states are detached at the start of every outer step and every outer step but the last runs without
gradient. With probability 1 - p_detach (one draw per training segment from torch's RNG) the gradient also reaches the
penultimate answer update: it runs with gradient from detached inputs (its latent loop without gradient) and its output
enters the final outer step undetached ("stochastic depth over H"). The module calls with gradient are therefore
L + 1 or L + 2; each training segment reports the window it drew in `SegmentOutput.calls`.

Depth: H and L grow on two independent milestone schedules over training progress; evaluation runs any
(h_test, l_test) with memory constant in H. `reasoning_steps` yields the answer after every outer step, from which
test-time compute (`recursive_reasoning.inference`) reads settling and early exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Literal

import torch
from torch import Tensor

from recursive_reasoning.core.network import ReasoningNetwork
from strategies.base import Batch, Carry, Progress, ReasoningStep, RecursionStrategy, SegmentOutput

Schedule = list[tuple[float, int]]


def from_percents(start: int, percents: list[float]) -> Schedule:
    """A schedule from a start depth and the reference's growth milestones (percent of training, +1 each)."""
    return [(0.0, start)] + [(round(p / 100.0, 6), start + i + 1) for i, p in enumerate(percents)]


# The RSM README's curricula (navidivan/rsm README.md, "Sudoku-Extreme" and "Maze-Hard" commands): from
# H_cycles = L_cycles = 2, +1 at each of curriculum_milestones (H) and curriculum_L_milestones (L), in percent of the
# total steps. Sudoku: (2, 2) -> (8, 12); Maze: H 2 -> 9, L 2 -> 5.
SUDOKU_H_SCHEDULE: Schedule = from_percents(2, [20.1, 40.1, 55.1, 65.1, 75.1, 85.1])
SUDOKU_L_SCHEDULE: Schedule = from_percents(2, [30.1, 50.1, 70.1, 80.1, 84.1, 86.1, 88.1, 90.1, 92.1, 94.1])
MAZE_H_SCHEDULE: Schedule = from_percents(2, [20.1, 40.1, 55.1, 65.1, 75.1, 85.1, 95.1])
MAZE_L_SCHEDULE: Schedule = from_percents(2, [30.1, 50.1, 70.1])


def _schedule(name: str, schedule: Schedule | None, default: Schedule, minimum: int) -> Schedule:
    """Validate milestones: the first at fraction 0, fractions strictly increasing in [0, 1], depths >= minimum."""
    if schedule is None:
        return list(default)
    milestones = [(float(f), int(d)) for f, d in schedule]
    if not milestones or milestones[0][0] != 0.0:
        raise ValueError(f"{name} must start with a milestone at fraction 0.0, got {milestones}.")
    fractions = [f for f, _ in milestones]
    if any(not 0.0 <= f <= 1.0 for f in fractions) or any(a >= b for a, b in zip(fractions, fractions[1:])):
        raise ValueError(f"{name} fractions must be strictly increasing in [0, 1], got {fractions}.")
    if any(d < minimum for _, d in milestones):
        raise ValueError(f"every depth of {name} must be >= {minimum}, got {milestones}.")
    return milestones


def _at(schedule: Schedule, step: int, total: int) -> int:
    """The depth of the last milestone reached at `step` of `total`: (step / total) * 100 >= 100 * fraction.

    The comparison is the reference's own (pretrain.py, get_target_H / get_target_L: percent of the total steps,
    reached when >=), in percent, so a milestone given as 20.1% switches at exactly the same step.
    """
    percent = (step / max(1, total)) * 100.0
    return [d for f, d in schedule if percent >= round(f * 100.0, 9)][-1]


class RSM(RecursionStrategy):
    """Recursive Stem Model: H detached outer steps, gradient through the last (and stochastically the penultimate).

    Depth milestones follow the reference (navidivan/rsm pretrain.py, get_target_H / get_target_L): the optimiser
    step being taken, counted from 1, as a percent of the total steps; a milestone counts once that percent is >= its
    own. In-training evaluation after s steps runs at the depth of step s (eval_depth 'current'), as the reference's
    evaluate() does with its active H and L.

    Args:
        h_schedule: Outer-step milestones [(fraction of training, H), ...] starting at fraction 0.0, every H >= 2;
            None gives the RSM README's Sudoku curriculum, H = 2..8 at 0, 20.1, 40.1, 55.1, 65.1, 75.1, 85.1%.
        l_schedule: Latent-update milestones [(fraction, L), ...] starting at 0.0; None gives the Sudoku curriculum,
            L = 2..12 at 0, 30.1, 50.1, 70.1, 80.1, 84.1, 86.1, 88.1, 90.1, 92.1, 94.1%.
        p_detach: Probability that the penultimate answer update is detached too (1.0: only the last outer step
            trains; 0.0: the gradient always reaches the penultimate answer update).
        h_test: Outer steps at evaluation (plain and test-time); None follows eval_depth.
        l_test: Latent updates per outer step at evaluation; None follows eval_depth.
        eval_depth: Depth of evaluation where h_test / l_test are None: 'current', the schedules' depth at the
            progress reached (the reference; needs the planned total, which checkpoints save), or 'final', the last
            milestones' depth.
        eval_depths: Extra evaluation depths H; the module logs val/exact_accuracy@H{h} for each (L as l_test).
        loss_type: Token cross-entropy on the final answer: 'stablemax' or 'softmax', RSM's one free base argument:
            the others are fixed (one supervision segment per example, no halt exploration, no halt loss, no early
            exit).
    """

    retired_args = {"settle_k": "never read: test-time settling is model.test_time.settle_k"}

    def __init__(
        self,
        h_schedule: list[tuple[float, int]] | None = None,
        l_schedule: list[tuple[float, int]] | None = None,
        p_detach: float = 0.5,
        h_test: int | None = None,
        l_test: int | None = None,
        eval_depth: Literal["current", "final"] = "current",
        eval_depths: list[int] | None = None,
        loss_type: Literal["stablemax", "softmax"] = "stablemax",
    ) -> None:
        super().__init__(
            supervision_steps=1, halt_exploration=0.0, loss_type=loss_type, halt_loss_weight=0.0, eval_early_exit=False
        )
        if not 0.0 <= p_detach <= 1.0:
            raise ValueError(f"p_detach is a probability in [0, 1], got {p_detach}.")
        if (h_test is not None and h_test < 1) or (l_test is not None and l_test < 1):
            raise ValueError(f"h_test and l_test must be >= 1, got {h_test} and {l_test}.")
        if eval_depths is not None and any(int(h) < 1 for h in eval_depths):
            raise ValueError(f"eval_depths must all be >= 1, got {eval_depths}.")
        if eval_depth not in ("current", "final"):
            raise ValueError(f"unknown eval_depth {eval_depth!r}; choose 'current' (the reference) or 'final'.")
        self.h_schedule = _schedule("h_schedule", h_schedule, SUDOKU_H_SCHEDULE, minimum=2)
        self.l_schedule = _schedule("l_schedule", l_schedule, SUDOKU_L_SCHEDULE, minimum=1)
        self.p_detach = p_detach
        self.h_test = h_test if h_test is not None else self.h_schedule[-1][1]
        self.l_test = l_test if l_test is not None else self.l_schedule[-1][1]
        self.eval_depth = eval_depth
        self._fixed_test = (h_test is not None, l_test is not None)
        self.eval_depths = [int(h) for h in eval_depths] if eval_depths is not None else []

    # --- depth -------------------------------------------------------------------------------------------------

    def depth(self, progress: Progress, training: bool) -> tuple[int, int]:
        """(H, L) of a training step or an evaluation.

        Training at `progress.step` steps taken runs the milestones of step progress.step + 1 (the reference counts
        the step being taken from 1). Evaluation runs h_test / l_test where given; the others follow eval_depth:
        'final' the last milestones, 'current' the milestones of progress.step, the steps taken. Constant schedules
        need no total; growing ones raise when the total number of training steps is unknown.
        """
        if training:
            outer, latent = self._scheduled(progress.step + 1, progress)
            if outer < 2:
                raise ValueError(
                    f"RSM trains with H >= 2 outer steps (a detached warm-up and a final step), got {outer}."
                )
            return outer, latent
        fixed_h, fixed_l = self._fixed_test
        if self.eval_depth == "final" or (fixed_h and fixed_l):
            return self.h_test, self.l_test
        if not progress.total and (len(self.h_schedule) > 1 or len(self.l_schedule) > 1):
            raise ValueError(
                "RSM(eval_depth='current') evaluates at the depth training reached, which needs the planned total of "
                "training steps (trainer.max_steps, or a checkpoint saved by rr fit); set eval_depth: final, or h_test "
                "and l_test, to evaluate at a fixed depth."
            )
        outer, latent = self._scheduled(progress.step, progress)
        return (self.h_test if fixed_h else outer), (self.l_test if fixed_l else latent)

    def _scheduled(self, step: int, progress: Progress) -> tuple[int, int]:
        """The schedules' (H, L) at `step` of progress.total steps (no total needed for constant schedules)."""
        if len(self.h_schedule) == 1 and len(self.l_schedule) == 1:
            return self.h_schedule[0][1], self.l_schedule[0][1]
        if not progress.total or progress.total <= 0:
            raise ValueError(
                "RSM's depth schedules grow over training and need the total number of training steps; set "
                "trainer.max_steps (or a finite max_epochs with a sized data set)."
            )
        return _at(self.h_schedule, step, progress.total), _at(self.l_schedule, step, progress.total)

    # --- one segment -------------------------------------------------------------------------------------------

    def recurse(
        self, net: ReasoningNetwork, y: Tensor, z: Tensor, x: Tensor, progress: Progress, training: bool
    ) -> tuple[Tensor, Tensor]:
        """H outer steps; in training with a fresh stochastic-depth draw (`run_segment` reports it)."""
        return self._unroll(net, y, z, x, progress, training, training and self._draw())

    def run_segment(self, net: ReasoningNetwork, carry: Carry, progress: Progress, training: bool) -> SegmentOutput:
        """The base segment, reporting in `calls` the gradient window this segment drew (drawn on the host, so the
        segment compiles as one graph: `ReasoningNetwork.segment`)."""
        penultimate_grad = training and self._draw()
        return net.segment(self._drawn_segment)(net, self.compilable(net, carry), progress, training, penultimate_grad)

    def _drawn_segment(
        self, net: ReasoningNetwork, carry: Carry, progress: Progress, training: bool, penultimate_grad: bool
    ) -> SegmentOutput:
        x = self.embed(net, carry.batch)
        y, z = self._unroll(net, carry.y, carry.z, x, progress, training, penultimate_grad)
        return replace(self.read_heads(net, y, z), calls=self._window(progress, training, penultimate_grad))

    def _draw(self) -> bool:
        """Whether the gradient reaches the penultimate answer update: the reference's one torch.rand(1) against
        p_detach, none at all when p_detach is 0."""
        return self.p_detach <= 0.0 or not torch.rand(1).item() < self.p_detach

    def _unroll(
        self, net: ReasoningNetwork, y: Tensor, z: Tensor, x: Tensor, progress: Progress, training: bool,
        penultimate_grad: bool,
    ) -> tuple[Tensor, Tensor]:
        outer, latent = self.depth(progress, training)
        if not training:
            with torch.no_grad():
                for _ in range(outer):
                    y, z = self.cycle(net, y, z, x, latent)
            return y, z
        outer = max(2, outer)  # the reference trains at H >= 2 (a detached warm-up and a final step)
        with torch.no_grad():
            for _ in range(outer - 2):
                y, z = self.cycle(net, y.detach(), z.detach(), x, latent)
            y, z = y.detach(), z.detach()
            for _ in range(latent):
                z = net.latent_step(z, y, x)
        with torch.set_grad_enabled(penultimate_grad):
            y = net.answer_step(y, z)
        return self.cycle(net, y if penultimate_grad else y.detach(), z.detach(), x, latent)

    def _window(self, progress: Progress, training: bool, penultimate_grad: bool) -> tuple[int, int]:
        """(H * (L + 1), L + 1 + penultimate_grad) in training; evaluation runs everything without gradient."""
        outer, latent = self.depth(progress, training)
        if not training:
            return outer * (latent + 1), 0
        return max(2, outer) * (latent + 1), latent + 1 + int(penultimate_grad)

    def module_calls(self, progress: Progress, training: bool) -> tuple[int, int]:
        """(H * (L + 1), L + 1 or L + 2) of a segment: the declared window leaves out the stochastic penultimate
        update (L + 1) unless p_detach is 0 (always L + 2); a training segment reports its draw in `calls`."""
        return self._window(progress, training, self.p_detach == 0.0)

    # --- loss and halting --------------------------------------------------------------------------------------

    def halt_loss_terms(
        self, net: ReasoningNetwork, carry: Carry, out: SegmentOutput, progress: Progress, exact: Tensor, training: bool
    ) -> dict[str, Tensor]:
        """None: RSM trains on the cross-entropy of the final answer only."""
        return {}

    def unused_parameters(self, net: ReasoningNetwork) -> dict[str, str]:
        """The Q head, when the network has one (RSM recipes build none: `halt_head: false`)."""
        if net.q_head is None:
            return {}
        return {name: "RSM has no Q head; build the network with halt_head: false" for name, _ in
                net.q_head.named_parameters(prefix="q_head")}

    def halt_signal(self, out: SegmentOutput) -> Tensor:
        """Never halts early: the single segment per example ends at the step limit."""
        return torch.zeros_like(out.halt_logits, dtype=torch.bool)

    # --- evaluation --------------------------------------------------------------------------------------------

    def evaluation_variants(self) -> dict[str, RecursionStrategy]:
        """Named copies of this strategy evaluated besides it: one per `eval_depths` entry, 'H{h}' at h_test = h."""
        args: dict[str, Any] = dict(self.__dict__["_init_args"])
        return {f"H{h}": RSM(**{**args, "h_test": h, "eval_depths": None}) for h in self.eval_depths}

    has_halt_head = False

    def evaluation_steps(self, progress: Progress) -> int:
        """H, the evaluation depth of this progress (h_test, or the schedule's as eval_depth says)."""
        return self.depth(progress, False)[0]

    @torch.no_grad()
    def reasoning_steps(
        self, net: ReasoningNetwork, batch: Batch, progress: Progress, steps: int | None = None
    ) -> Iterator[ReasoningStep]:
        """One step per outer step (L latent updates, one answer update) at the evaluation depth; `steps` overrides H.

        RSM has no Q head (its recipes build none: the halt logits are zeros) and its halting rule never fires.
        """
        outer, latent = self.depth(progress, False)
        x = net.embed(batch["inputs"], batch["puzzle_ids"])
        y, z = net.initial_states(x.shape[0])
        for _ in range(outer if steps is None else steps):
            y, z = self.cycle(net, y, z, x, latent)
            out = self.read_heads(net, y, z)
            yield ReasoningStep(logits=out.logits, halt_logits=out.halt_logits, halted=self.halt_signal(out))
