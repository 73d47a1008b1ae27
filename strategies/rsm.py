"""RSM (Recursive Stem Model, spec section 4b): detached warm-up, loss on the final answer only, growing depth.

RSM has no deep supervision, no ACT and no Q head. It fits the module's loop as a strategy with one supervision
segment per example (`supervision_steps` is fixed to 1, so every slot halts after its segment and restarts from the
initial states at the next training step); the segment runs H outer steps, each L latent updates
`z = f(z, y + x)` then one answer update `y = f(y, z)`.

Training: the states are detached at the start of every outer step and every outer step but the last runs without
gradient. With probability 1 - p_detach (one draw per training segment from torch's RNG) the gradient also reaches the
penultimate answer update: it runs with gradient from detached inputs (its latent loop without gradient) and its output
enters the final outer step undetached ("stochastic depth over H"). The module calls with gradient are therefore
L + 1 or L + 2; `module_calls` reports the window of the most recent training draw (see there).

Depth: H and L grow on two independent milestone schedules over training progress; evaluation runs any
(h_test, l_test) with memory constant in H. `RSM.trace` returns the reliability signals decoded after each outer step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch import Tensor

from recursive_reasoning.core.network import ReasoningNetwork
from strategies.base import Batch, Carry, Progress, RecursionStrategy, SegmentOutput

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


def settle_signals(answers: Tensor, settle_k: int) -> tuple[Tensor, Tensor]:
    """Steps-to-settle and settled flags from decoded answers after each outer step.

    Args:
        answers: Decoded tokens [H, B, L] after outer steps 1..H.
        settle_k: An example is settled when its answer did not change over the last k outer steps.

    Returns:
        steps_to_settle [B] int64 (the first outer step, 1-based, after which the answer never changes again) and
        settled [B] bool (steps_to_settle <= H - k, i.e. unchanged over the last k steps; needs H > k).
    """
    steps = answers.shape[0]
    changed = (answers[1:] != answers[:-1]).any(-1)  # [H-1, B]: step t+2 differs from step t+1
    index = torch.arange(2, steps + 1, device=answers.device).view(-1, 1).expand_as(changed)
    ones = torch.ones(answers.shape[1], dtype=torch.long, device=answers.device)
    steps_to_settle = torch.where(changed, index, 1).amax(0) if steps > 1 else ones
    return steps_to_settle, steps_to_settle <= steps - settle_k


def sudoku_rule_checker(tokens: Tensor) -> Tensor:
    """A `trace` checker for Sudoku: whether each decoded grid of tokens [B, N*N] (digit + 1) is a valid solution."""
    from datamodules.sudoku import decode
    from datamodules.sudoku_rules import valid_solutions

    grids = decode(tokens.long()).cpu().numpy()
    return torch.from_numpy(valid_solutions(grids)).to(tokens.device)


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
        h_test: Outer steps at evaluation; None follows eval_depth. `trace` and test-time compute use h_test, or the
            final H of h_schedule when None.
        l_test: Latent updates per outer step at evaluation; None follows eval_depth (`trace`: the final L).
        eval_depth: Depth of evaluation where h_test / l_test are None: 'current', the schedules' depth at the
            progress reached (the reference; needs the planned total, which checkpoints save), or 'final', the last
            milestones' depth.
        eval_depths: Extra evaluation depths H; the module logs val/exact_accuracy@H{h} for each (L as l_test).
        settle_k: Outer steps without change after which `trace` calls an answer settled.
        loss_type: Token cross-entropy on the final answer: 'stablemax' or 'softmax'.
    """

    def __init__(
        self,
        h_schedule: list[tuple[float, int]] | None = None,
        l_schedule: list[tuple[float, int]] | None = None,
        p_detach: float = 0.5,
        h_test: int | None = None,
        l_test: int | None = None,
        eval_depth: Literal["current", "final"] = "current",
        eval_depths: list[int] | None = None,
        settle_k: int = 3,
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
        if settle_k < 1:
            raise ValueError(f"settle_k must be >= 1, got {settle_k}.")
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
        self.settle_k = settle_k
        self.last_penultimate_grad: bool | None = None  # the most recent stochastic-depth draw (training)

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
        outer, latent = self.depth(progress, training)
        if not training:
            with torch.no_grad():
                for _ in range(outer):
                    y, z = self.cycle(net, y, z, x, latent)
            return y, z
        outer = max(2, outer)  # the reference trains at H >= 2 (a detached warm-up and a final step)
        # The reference's draw: one torch.rand(1) against p_detach, none at all when p_detach is 0.
        penultimate_grad = self.p_detach <= 0.0 or not torch.rand(1).item() < self.p_detach
        self.last_penultimate_grad = penultimate_grad
        with torch.no_grad():
            for _ in range(outer - 2):
                y, z = self.cycle(net, y.detach(), z.detach(), x, latent)
            y, z = y.detach(), z.detach()
            for _ in range(latent):
                z = net.latent_step(z, y, x)
        with torch.set_grad_enabled(penultimate_grad):
            y = net.answer_step(y, z)
        return self.cycle(net, y if penultimate_grad else y.detach(), z.detach(), x, latent)

    def module_calls(self, progress: Progress, training: bool) -> tuple[int, int]:
        """(H * (L + 1), L + 1 or L + 2) of a segment.

        In training the stochastic-depth draw happens in `recurse`; this reports the window of the most recent draw.
        Before any draw it reports the deterministic cases (p_detach 1.0: L + 1; 0.0: L + 2) and otherwise L + 1.
        Evaluation runs everything without gradient.
        """
        outer, latent = self.depth(progress, training)
        if not training:
            return outer * (latent + 1), 0
        outer = max(2, outer)
        penultimate = self.last_penultimate_grad
        if penultimate is None:
            penultimate = self.p_detach == 0.0
        return outer * (latent + 1), latent + 1 + int(penultimate)

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

    @torch.no_grad()
    def reasoning_steps(
        self, net: ReasoningNetwork, batch: Batch, progress: Progress, steps: int | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One step per outer step (L latent updates, one answer update) at l_test; `steps` overrides h_test.

        RSM has no Q head: the halt logits are zeros.
        """
        x = net.embed(batch["inputs"], batch["puzzle_ids"])
        y, z = net.initial_states(x.shape[0])
        zeros = torch.zeros(x.shape[0], device=x.device)
        for _ in range(self.h_test if steps is None else steps):
            y, z = self.cycle(net, y, z, x, self.l_test)
            yield net.decode(y), zeros

    @torch.no_grad()
    def trace(
        self,
        net: ReasoningNetwork,
        batch: Batch,
        h_test: int | None = None,
        l_test: int | None = None,
        settle_k: int | None = None,
        checker: Callable[[Tensor], Tensor] | None = None,
        early_exit: bool = False,
    ) -> dict[str, Tensor]:
        """Run the outer steps without gradient and return the reliability signals per example.

        Memory is constant in H apart from the decoded answers [H, B, L] (int16) and the relative changes [H, B].

        Args:
            net: The reasoning network.
            batch: inputs [B, L] and puzzle_ids [B].
            h_test: Outer steps; None uses the strategy's h_test.
            l_test: Latent updates per outer step; None uses the strategy's l_test.
            settle_k: Unchanged outer steps that make an answer settled; None uses the strategy's settle_k.
            checker: Maps decoded tokens [B, L] to bool [B] (e.g. the puzzle's rule checker).
            early_exit: Freeze each example once it is settled (its state, answer and relative change stay put);
                the loop stops when every example is settled.

        Returns:
            answers [H, B, L] int16 (argmax tokens after each outer step), relative_change [H, B] float32
            (||y_t - y_{t-1}|| / ||y_{t-1}||), steps_to_settle [B], settled [B] bool, steps_used [B] (outer steps run
            per example), predictions [B, L] (the final answer), and with a checker passes_checker [B] and
            certified [B] (settled and passing the checker).
        """
        outer = self.h_test if h_test is None else h_test
        latent = self.l_test if l_test is None else l_test
        k = self.settle_k if settle_k is None else settle_k
        if outer < 1 or latent < 1 or k < 1:
            raise ValueError(f"h_test, l_test and settle_k must be >= 1, got {outer}, {latent} and {k}.")
        inputs = batch["inputs"]
        size, device = inputs.shape[0], inputs.device
        x = net.embed(inputs, batch["puzzle_ids"])
        y, z = net.initial_states(size)
        answers = torch.empty((outer, size, net.seq_len), dtype=torch.int16, device=device)
        relative = torch.zeros((outer, size), dtype=torch.float32, device=device)
        steps_used = torch.full((size,), outer, dtype=torch.long, device=device)
        unchanged = torch.zeros(size, dtype=torch.long, device=device)
        live = torch.ones(size, dtype=torch.bool, device=device)
        for t in range(outer):
            new_y, new_z = self.cycle(net, y, z, x, latent)
            if early_exit:
                keep = live.view(-1, 1, 1)
                new_y, new_z = torch.where(keep, new_y, y), torch.where(keep, new_z, z)
            previous = y.float().flatten(1)
            relative[t] = (new_y.float().flatten(1) - previous).norm(dim=1) / previous.norm(dim=1).clamp_min(1e-12)
            answers[t] = net.decode(new_y).argmax(-1).to(torch.int16)
            y, z = new_y, new_z
            if t > 0:
                same = (answers[t] == answers[t - 1]).all(-1)
                unchanged = torch.where(same, unchanged + 1, torch.zeros_like(unchanged))
            if early_exit:
                newly = live & (unchanged >= k)
                steps_used = torch.where(newly, t + 1, steps_used)
                live = live & ~newly
                if not bool(live.any()):
                    answers[t + 1 :] = answers[t]
                    break
        steps_to_settle, settled = settle_signals(answers, k)
        result = {
            "answers": answers,
            "relative_change": relative,
            "steps_to_settle": steps_to_settle,
            "settled": settled,
            "steps_used": steps_used,
            "predictions": answers[-1].long(),
        }
        if checker is not None:
            passes = torch.as_tensor(checker(result["predictions"]), dtype=torch.bool, device=device)
            result["passes_checker"] = passes
            result["certified"] = passes & settled
        return result
