"""Test-time compute: depth scaling, early exit, augmentation voting, latent-noise sampling and answer selection.

Every option works on any strategy through `RecursionStrategy.reasoning_steps` (one answer per segment, or per outer
step for RSM). A batch is expanded into P transformed copies (the puzzle format's symmetries) x K samples
(trajectories with Gaussian noise on the latent state), each trajectory stops at its exit step, the answers are mapped
back to the original frame, and one answer per puzzle is selected. The label-free vote is always returned beside the
selection, so a checker-assisted number never stands alone.

Augmented HRM's protocol (Ren & Liu 2026, renrua52/hrm-mechanistic-analysis `batch_inference.py`) is
`perturbations='reference'` (Sudoku: the cyclic digit shifts; Maze: the start/goal swap) over a checkpoint ensemble,
scored by `oracle_majority`: a pass is confident when the strategy's own halting rule fires at its last step, and a
puzzle counts as solved when, for some checkpoint, the correct confident passes are a strict majority of its confident
passes. It reads the labels, so it is reported under its own name beside the label-free vote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from datamodules.kinds import PuzzleKind
from recursive_reasoning.core.network import ReasoningNetwork
from strategies.base import Batch, Progress, RecursionStrategy

__all__ = [
    "Candidates",
    "LatentNoise",
    "Solution",
    "TestTimeOptions",
    "decide",
    "exit_steps",
    "oracle_majority",
    "select",
    "solve_ensemble",
    "solve_with_options",
    "trajectories",
]

EarlyExit = Literal["none", "halt", "settled"]
Selection = Literal["vote", "confident_vote", "max_q", "checker"]
Perturbations = Literal["symmetries", "reference"]


@dataclass
class TestTimeOptions:
    """Test-time compute for evaluation and prediction; the defaults are one plain pass at the trained depth.

    Args:
        steps: Reasoning steps (segments; RSM: outer steps) per trajectory; None uses the trained number.
        early_exit: Where a trajectory stops: 'none' (after all steps), 'halt' (the first step where the strategy's
            own halting rule fires: TRM q_halt > 0, HRM q_halt > q_continue) or 'settled' (the first step whose answer
            has not changed for settle_k steps).
        settle_k: Unchanged steps that make an answer settled.
        copies: Transformed copies P voted over (copy 0 is the puzzle itself).
        perturbations: Which copies: 'symmetries' (random validity-preserving symmetries: Sudoku relabellings and
            band/stack shuffles, Maze dihedral, ARC its augmentations) or 'reference' (Augmented HRM's fixed set:
            Sudoku the cyclic digit shifts k = 0..copies-1, at most 9; Maze the start/goal swap, at most 2).
        samples: Trajectories K per copy; with noise > 0 they differ.
        noise: Standard deviation of the Gaussian noise added to the latent state after every latent update.
        selection: 'vote' (most frequent answer, ties by mean sigmoid(q_halt)), 'confident_vote' (the vote among
            confident answers, all if none), 'max_q' (the answer with the highest q_halt) or 'checker' (the vote
            among answers that pass the puzzle's rule checker, all if none).
        confidence: What makes an answer confident for 'confident_vote': None, the strategy's own halting rule at
            the trajectory's exit step (as Augmented HRM); a number, sigmoid(q_halt) >= it.
        seed: Seed of the transforms and the noise.
    """

    __test__ = False  # not a pytest class despite the name

    steps: int | None = None
    early_exit: EarlyExit = "none"
    settle_k: int = 2
    copies: int = 1
    perturbations: Perturbations = "symmetries"
    samples: int = 1
    noise: float = 0.0
    selection: Selection = "vote"
    confidence: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.early_exit not in ("none", "halt", "settled"):
            raise ValueError(f"unknown early_exit {self.early_exit!r}; choose 'none', 'halt' or 'settled'")
        if self.selection not in ("vote", "confident_vote", "max_q", "checker"):
            raise ValueError(
                f"unknown selection {self.selection!r}; choose 'vote', 'confident_vote', 'max_q' or 'checker'"
            )
        if self.perturbations not in ("symmetries", "reference"):
            raise ValueError(f"unknown perturbations {self.perturbations!r}; choose 'symmetries' or 'reference'")
        for name in ("settle_k", "copies", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    @property
    def is_plain(self) -> bool:
        """One pass at the trained depth: what `RecursiveReasoner.solve` computes anyway."""
        return self == TestTimeOptions(seed=self.seed)

    def label(self) -> str:
        """The non-default options, e.g. 'steps=32 copies=8 selection=vote' ('single pass' when none)."""
        default = TestTimeOptions()
        parts = [f"{k}={v}" for k, v in self.__dict__.items() if k != "seed" and v != getattr(default, k)]
        return " ".join(parts) or "single pass"


class LatentNoise:
    """A network seen with Gaussian noise of scale sigma added to the latent state after every latent update."""

    def __init__(self, net: ReasoningNetwork, sigma: float, generator: torch.Generator) -> None:
        self._net, self._sigma, self._generator = net, sigma, generator

    def latent_step(self, z: Tensor, y: Tensor, x: Tensor) -> Tensor:
        """The network's latent update plus noise."""
        z = self._net.latent_step(z, y, x)
        noise = torch.randn(z.shape, generator=self._generator, device=z.device, dtype=torch.float32)
        return z + self._sigma * noise.to(z.dtype)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._net, name)


def exit_rule(answers: Tensor, halts: Tensor | None, early_exit: EarlyExit, settle_k: int) -> Tensor:
    """Where the early-exit rule fires [S, N] bool, from answers [S, N, L] and the loop's `halted` [S, N].

    'halt': where the strategy's own halting rule fired (`ReasoningStep.halted`, read, never recomputed here);
    'settled' (an answer rule, not halting): the answer equals the previous settle_k answers; 'none': never.
    """
    count = answers.shape[0]
    if early_exit == "none":
        return torch.zeros(answers.shape[:2], dtype=torch.bool, device=answers.device)
    if early_exit == "halt":
        if halts is None:
            raise ValueError("early_exit='halt' needs a strategy with a Q head; use early_exit='settled'")
        return halts
    run = torch.zeros(answers.shape[:2], dtype=torch.long, device=answers.device)
    if count > 1:
        unchanged = (answers[1:] == answers[:-1]).all(-1)  # [S-1, N]
        for s in range(count - 1):
            run[s + 1] = torch.where(unchanged[s], run[s] + 1, torch.zeros_like(run[s]))
    return run >= settle_k


def exit_steps(answers: Tensor, halts: Tensor | None, early_exit: EarlyExit, settle_k: int) -> Tensor:
    """Index [N] of the step each trajectory stops at: the first where `exit_rule` fires, else the last."""
    fired = exit_rule(answers, halts, early_exit, settle_k)
    count = answers.shape[0]
    index = torch.arange(count, device=answers.device).view(-1, 1).expand_as(fired)
    return torch.where(fired, index, count).amin(0).clamp(max=count - 1)


def select(candidates: Tensor, scores: Tensor | None, eligible: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Pick one answer per puzzle among N candidates [N, B, L], vectorised over the batch.

    Candidates are grouped by equality; a group's rank is its size, then its mean score (sigmoid(q_halt)), then its
    first candidate. Only `eligible` candidates [N, B] vote, unless none of a puzzle's is eligible.

    Returns:
        The winner [B, L], the fraction of voting candidates that agree with it [B], and its mean score [B].
    """
    n, b, _ = candidates.shape
    if eligible is None:
        eligible = torch.ones(n, b, dtype=torch.bool, device=candidates.device)
    eligible = eligible | ~eligible.any(0, keepdim=True)  # nobody eligible: everyone votes
    per_puzzle = candidates.permute(1, 0, 2)  # [B, N, L]
    equal = (per_puzzle[:, :, None, :] == per_puzzle[:, None, :, :]).all(-1)  # [B, N, N]
    votes = eligible.T[:, None, :].float()  # [B, 1, N]
    counts = (equal.float() * votes).sum(-1)  # [B, N]
    if scores is None:
        score = torch.zeros_like(counts)
    else:
        score = (equal.float() * votes * scores.T[:, None, :]).sum(-1) / counts.clamp(min=1)
    key = torch.where(eligible.T, counts + 0.5 * score.clamp(0, 1), torch.full_like(counts, -1.0))
    best = key.argmax(-1)  # first of the maxima
    rows = torch.arange(b, device=candidates.device)
    winner = per_puzzle[rows, best]
    return winner, counts[rows, best] / eligible.float().sum(0), score[rows, best]


def oracle_majority(correct: Tensor, confident: Tensor) -> Tensor:
    """Augmented HRM's verdict per puzzle [B] from each checkpoint's passes, correct and confident [M, N, B] bool.

    A checkpoint solves a puzzle when its correct confident passes are a strict majority of its confident passes (a
    tie, or no confident pass, does not); the ensemble solves it when any checkpoint does. An oracle: it reads the
    labels, through `correct`.
    """
    if correct.shape != confident.shape or correct.dim() != 3:
        raise ValueError(f"correct and confident must both be [checkpoints, passes, puzzles], got "
                         f"{tuple(correct.shape)} and {tuple(confident.shape)}")
    hits = (correct & confident).sum(1)
    return (2 * hits > confident.sum(1)).any(0)


@dataclass
class Solution:
    """Answers of a batch under `TestTimeOptions`, with the signals behind them.

    Attributes:
        predictions: Selected answers [B, L].
        label_free: The plain vote [B, L] (the same as predictions unless the selection used the rule checker).
        agreement: Fraction of the voting trajectories that gave the selected answer [B].
        confidence: Mean sigmoid(q_halt) of the selected answer's trajectories [B] (NaN without a Q head).
        steps: Mean steps used per trajectory of the puzzle [B].
        settled: The untransformed, noise-free trajectory's answer was unchanged over its last settle_k steps [B].
        passes_checker: The selected answer passes the puzzle's rule checker [B] (None without a checker).
        trace: Answers after every step of the untransformed first trajectory [S, B, L], and its halt
            probabilities [S, B] (NaN without a Q head).
        steps_run: Reasoning steps run in total (sum over trajectories of the steps each used).
        answers: Every trajectory's answer in the puzzle's frame, per model [M, N, B, L] (N = copies x samples).
        confident: Whether each model's strategy's halting rule fired at each trajectory's exit step [M, N, B]
            (None without a Q head); with `answers`, what `oracle_majority` scores.
    """

    predictions: Tensor
    label_free: Tensor
    agreement: Tensor
    confidence: Tensor
    steps: Tensor
    settled: Tensor
    passes_checker: Tensor | None
    trace: tuple[Tensor, Tensor]
    steps_run: int
    answers: Tensor
    confident: Tensor | None


@dataclass
class Candidates:
    """The answers of every trajectory of one model on a batch, in the puzzles' own frame.

    Attributes:
        answers: Answer tokens [N, B, L] (N = copies x samples).
        scores: sigmoid(q_halt) at each trajectory's exit step [N, B]; None without a Q head.
        confident: The strategy's halting rule fired at each trajectory's exit step [N, B]; None without a Q head.
        steps: Steps each trajectory used [N, B].
        trace: The untransformed first trajectory's answers after every step [S, B, L] and its sigmoid(q_halt) [S, B]
            (NaN without a Q head).
        settled: That trajectory's answer was unchanged over its last settle_k steps [B].
    """

    answers: Tensor
    scores: Tensor | None
    confident: Tensor | None
    steps: Tensor
    trace: tuple[Tensor, Tensor]
    settled: Tensor


@torch.no_grad()
def trajectories(
    net: ReasoningNetwork,
    strategy: RecursionStrategy,
    batch: Batch,
    progress: Progress,
    options: TestTimeOptions,
    fmt: PuzzleKind | None = None,
) -> Candidates:
    """Run the copies x samples trajectories of one model and return their answers at the exit steps."""
    inputs, device = batch["inputs"], batch["inputs"].device
    size, length = inputs.shape
    copies, samples = options.copies, options.samples
    if copies > 1 and fmt is None:
        raise ValueError("copies > 1 needs the puzzle format (its symmetries); pass the data module's format")
    rng = np.random.default_rng(options.seed)
    if copies > 1:
        assert fmt is not None
        host_inputs, host_ids = inputs.cpu().numpy(), batch["puzzle_ids"].cpu().numpy()
        if options.perturbations == "reference":
            moved, ids, inverse = fmt.reference_perturbations(host_inputs, host_ids, copies)
        else:
            moved, ids, inverse = fmt.transforms(host_inputs, host_ids, copies, rng)
        copy_inputs, copy_ids = torch.from_numpy(moved).to(device), torch.from_numpy(ids).to(device)
    else:
        copy_inputs, copy_ids, inverse = inputs[None], batch["puzzle_ids"][None], None
    expanded = {
        "inputs": copy_inputs.repeat_interleave(samples, 0).reshape(-1, length),  # [(P K B), L]
        "puzzle_ids": copy_ids.repeat_interleave(samples, 0).reshape(-1),
    }
    model_net: Any = net
    if options.noise > 0:
        generator = torch.Generator(device=device).manual_seed(options.seed)
        model_net = LatentNoise(net, options.noise, generator)

    answers, halts, decisions = [], [], []
    for step in strategy.reasoning_steps(model_net, expanded, progress, options.steps):
        answers.append(step.logits.argmax(-1))
        halts.append(step.halt_logits.float())
        decisions.append(step.halted)
        if options.early_exit != "none":  # stop once every trajectory has exited
            fired = torch.stack(decisions) if strategy.has_halt_head else None
            if bool(exit_rule(torch.stack(answers), fired, options.early_exit, options.settle_k).any(0).all()):
                break
    all_answers = torch.stack(answers)  # [S, N, L]
    # without a Q head there is no halting to exit on or be confident by: the loop's all-False `halted` is unused
    all_halt = torch.stack(halts) if strategy.has_halt_head else None
    all_decisions = torch.stack(decisions) if strategy.has_halt_head else None
    exit_at = exit_steps(all_answers, all_decisions, options.early_exit, options.settle_k)  # [N]
    columns = torch.arange(all_answers.shape[1], device=device)
    final = all_answers[exit_at, columns].view(copies, samples, size, length)
    score = torch.sigmoid(all_halt[exit_at, columns]) if all_halt is not None else None
    confident = all_decisions[exit_at, columns] if all_decisions is not None else None
    if inverse is not None:  # back to the original frame, one sample at a time (transforms differ per copy)
        restored = [inverse(final[:, k].cpu().numpy()) for k in range(samples)]
        final = torch.from_numpy(np.stack(restored, axis=1)).to(device)

    first = all_answers[:, :size]  # copy 0, sample 0: the untransformed trajectory (noisy when noise > 0)
    settled = torch.zeros(size, dtype=torch.bool, device=device)
    if first.shape[0] > options.settle_k:
        tail = first[-options.settle_k - 1 :]
        settled = (tail == tail[-1:]).all(-1).all(0)
    trace_q = torch.sigmoid(all_halt[:, :size]) if all_halt is not None else torch.full(
        first.shape[:2], math.nan, device=device)
    return Candidates(
        answers=final.reshape(copies * samples, size, length),
        scores=score.view(copies * samples, size) if score is not None else None,
        confident=confident.view(copies * samples, size) if confident is not None else None,
        steps=(exit_at + 1).view(copies * samples, size).float(),
        trace=(first, trace_q),
        settled=settled,
    )


def decide(
    inputs: Tensor, candidates: list[Candidates], options: TestTimeOptions, fmt: PuzzleKind | None = None
) -> Solution:
    """Select one answer per puzzle among the candidates of one or more models (a checkpoint ensemble).

    The trace, settled flag and confidence signals of the first model are reported; scores are used only when every
    model has a Q head.
    """
    size, length = inputs.shape
    device = inputs.device
    answers = torch.cat([c.answers for c in candidates])
    has_scores = all(c.scores is not None for c in candidates)
    scores = torch.cat([c.scores for c in candidates]) if has_scores else None  # type: ignore[misc]
    confident_each = None  # [M, N, B]
    if all(c.confident is not None for c in candidates):
        confident_each = torch.stack([c.confident for c in candidates])  # type: ignore[misc]
    confident = confident_each.flatten(0, 1) if confident_each is not None else None
    if options.selection in ("confident_vote", "max_q") and scores is None:
        raise ValueError(f"selection={options.selection!r} needs a Q head, which this strategy lacks")
    checked = fmt.check(inputs[:1].cpu().numpy(), inputs[:1].cpu().numpy()) if fmt is not None else None
    if options.selection == "checker" and checked is None:
        raise ValueError("selection='checker' needs a puzzle with a rule checker (Sudoku, Maze)")
    count = answers.shape[0]

    label_free, agreement, confidence = select(answers, scores)
    predictions = label_free
    if options.selection == "checker":
        assert fmt is not None
        ok = fmt.check(inputs.repeat(count, 1).cpu().numpy(), answers.reshape(-1, length).cpu().numpy())
        eligible = torch.from_numpy(np.asarray(ok)).to(device).view(count, size)
        predictions, agreement, confidence = select(answers, scores, eligible)
    elif options.selection == "confident_vote":
        assert scores is not None
        eligible = scores >= options.confidence if options.confidence is not None else confident
        predictions, agreement, confidence = select(answers, scores, eligible)
    elif options.selection == "max_q":
        assert scores is not None
        best = scores.argmax(0)
        predictions = answers[best, torch.arange(size, device=device)]
        confidence = scores.amax(0)
        agreement = (answers == predictions[None]).all(-1).float().mean(0)
    passes = None
    if fmt is not None:
        verdict = fmt.check(inputs.cpu().numpy(), predictions.cpu().numpy())
        passes = None if verdict is None else torch.from_numpy(np.asarray(verdict)).to(device)
    if scores is None:
        confidence = torch.full((size,), math.nan, device=device)
    steps = torch.cat([c.steps for c in candidates])
    return Solution(
        predictions=predictions,
        label_free=label_free,
        agreement=agreement,
        confidence=confidence,
        steps=steps.mean(0),
        settled=candidates[0].settled,
        passes_checker=passes,
        trace=candidates[0].trace,
        steps_run=int(steps.sum().item()),
        answers=torch.stack([c.answers for c in candidates]),
        confident=confident_each,
    )


def solve_with_options(
    net: ReasoningNetwork,
    strategy: RecursionStrategy,
    batch: Batch,
    progress: Progress,
    options: TestTimeOptions,
    fmt: PuzzleKind | None = None,
) -> Solution:
    """Solve a batch with test-time compute (see the module docstring and `TestTimeOptions`).

    Args:
        net: The trained network (evaluation mode is the caller's business).
        strategy: The recursion method.
        batch: inputs [B, L] and puzzle_ids [B].
        progress: Training progress (a curriculum evaluates at the depth it reached).
        options: The test-time options.
        fmt: The puzzle format: needed for copies > 1 and for the 'checker' selection.
    """
    return solve_ensemble([(net, strategy, progress)], batch, options, fmt)


def solve_ensemble(
    members: list[tuple[ReasoningNetwork, RecursionStrategy, Progress]],
    batch: Batch,
    options: TestTimeOptions,
    fmt: PuzzleKind | None = None,
) -> Solution:
    """`solve_with_options` over several models (e.g. checkpoints from the end of training): every model runs the
    same trajectories and all their answers vote together."""
    if options.selection in ("confident_vote", "max_q") and not all(m[1].has_halt_head for m in members):
        raise ValueError(f"selection={options.selection!r} needs a Q head, which {type(members[0][1]).__name__} lacks")
    found = [trajectories(net, strategy, batch, progress, options, fmt) for net, strategy, progress in members]
    return decide(batch["inputs"], found, options, fmt)
