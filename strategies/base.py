"""The contract every recursion method follows: how a segment is unrolled, the loss, the halting rule, the carry.

A strategy holds hyperparameters only, never weights. The LightningModule owns the training and evaluation loops and
calls the strategy's hooks; training progress is passed in explicitly (`Progress`) so curricula need no trainer.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import operator
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from recursive_reasoning.core.losses import sequence_loss
from recursive_reasoning.core.network import PUZZLE_ROWS, ReasoningNetwork

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class Progress:
    """Where training stands: optimiser steps taken and the planned total (None when unknown)."""

    step: int
    total: int | None = None

    @property
    def fraction(self) -> float:
        """Fraction of training done in [0, 1]; needs a known total."""
        if not self.total or self.total <= 0:
            raise ValueError(
                "this strategy needs the total number of training steps; set trainer.max_steps (or a finite "
                "max_epochs with a sized data set)."
            )
        return min(1.0, self.step / self.total)


@dataclass
class Carry:
    """Per-slot state that persists across segments (and, in training, across batches).

    Attributes:
        y: Answer state [B, S, D].
        z: Latent state [B, S, D].
        steps: Supervision segments run on the slot's current example [B] int32.
        halted: Whether the slot is finished and takes a new example at the next refresh [B] bool.
        batch: The example held in each slot (inputs, labels, puzzle_ids), [B, ...] each.
    """

    y: Tensor
    z: Tensor
    steps: Tensor
    halted: Tensor
    batch: Batch


@dataclass
class SegmentOutput:
    """What one supervision segment produced: the new states (with gradient where declared) and the heads."""

    y: Tensor
    z: Tensor
    logits: Tensor  # [B, L, V] fp32
    halt_logits: Tensor  # [B] fp32
    continue_logits: Tensor  # [B] fp32
    calls: tuple[int, int] | None = None  # (module calls, with gradient) drawn for this segment (RSM); None: declared


@dataclass
class ReasoningStep:
    """What one evaluation reasoning step (a segment; RSM: an outer step) produced, from `reasoning_steps`.

    Attributes:
        logits: Token logits [B, L, V] fp32 after the step.
        halt_logits: q_halt [B] fp32 (zeros without a Q head).
        halted: The strategy's own halting rule (`halt_signal`) on this step [B] bool; all False for a method that
            never halts early (RSM).
    """

    logits: Tensor
    halt_logits: Tensor
    halted: Tensor


@dataclass
class LossOutput:
    """Summed losses (divide by the batch size to get the optimised loss) and per-slot facts used by metrics."""

    total: Tensor  # scalar, summed over the batch
    terms: dict[str, Tensor]  # named loss terms, each summed over the batch
    exact: Tensor  # [B] bool, the sequence is exactly right
    token_accuracy: Tensor  # [B] float


class RecursionStrategy(ABC):
    """Base class of recursion methods (TRM, HRM, ...): hyperparameters and the rules of one segment.

    Args:
        supervision_steps: Supervision segments per example (N_sup); evaluation runs all of them.
        halt_exploration: Probability that a slot draws a minimum step count in [2, N_sup] before it may halt.
        loss_type: Token cross-entropy: 'stablemax' (float64, the reference default) or 'softmax'.
        halt_loss_weight: Weight of the halt (and continue) BCE terms in the total loss.
        eval_early_exit: At evaluation, stop each example at the first segment where the halting rule fires.
    """

    retired_args: ClassVar[dict[str, str]] = {}
    """Arguments older checkpoints recorded that no longer exist, with why; `from_hparams` drops them."""

    def __init__(
        self,
        supervision_steps: int = 16,
        halt_exploration: float = 0.1,
        loss_type: Literal["stablemax", "softmax"] = "stablemax",
        halt_loss_weight: float = 0.5,
        eval_early_exit: bool = False,
    ) -> None:
        if supervision_steps < 1:
            raise ValueError(f"supervision_steps must be >= 1, got {supervision_steps}.")
        if not 0.0 <= halt_exploration <= 1.0:
            raise ValueError(f"halt_exploration is a probability in [0, 1], got {halt_exploration}.")
        if loss_type not in ("stablemax", "softmax"):
            raise ValueError(f"unknown loss_type {loss_type!r}; choose 'stablemax' or 'softmax'.")
        self.supervision_steps = supervision_steps
        self.halt_exploration = halt_exploration
        self.loss_type = loss_type
        self.halt_loss_weight = halt_loss_weight
        self.eval_early_exit = eval_early_exit

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Record each subclass's constructor arguments, so a strategy can be saved as plain data and rebuilt."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def recording_init(self: RecursionStrategy, *args: Any, **kw: Any) -> None:
            if "_init_args" not in self.__dict__:  # the outermost constructor call is the one that counts
                bound = _constructor_signature(cls).bind(self, *args, **kw)
                bound.apply_defaults()
                self._init_args = dict(list(bound.arguments.items())[1:])
            init(self, *args, **kw)

        cls.__init__ = recording_init  # type: ignore[method-assign]

    def hparams(self) -> dict[str, Any]:
        """This strategy as plain data ({'class_path', 'init_args'}), safe for `torch.load(weights_only=True)`."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": dict(self.__dict__["_init_args"])}

    @staticmethod
    def from_hparams(data: dict[str, Any]) -> RecursionStrategy:
        """Rebuild a strategy saved by `hparams()`."""
        module_name, _, class_name = data["class_path"].rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise ImportError(
                f"cannot rebuild strategy {data['class_path']!r} from the checkpoint: {error}. Make its module "
                "importable (installed or on PYTHONPATH) before loading."
            ) from error
        if not (isinstance(cls, type) and issubclass(cls, RecursionStrategy)):
            raise TypeError(f"{data['class_path']!r} is not a RecursionStrategy subclass.")
        retired = cls.retired_args
        return cls(**{k: v for k, v in data.get("init_args", {}).items() if k not in retired})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.get("_init_args", {}).items())
        return f"{type(self).__name__}({args})"

    # --- carry -------------------------------------------------------------------------------------------------

    def initial_carry(self, net: ReasoningNetwork, batch: Batch) -> Carry:
        """A carry with every slot halted, so the first refresh loads the whole batch from the initial states."""
        size = batch["inputs"].shape[0]
        y, z = net.initial_states(size)
        device = batch["inputs"].device
        return Carry(
            y=y,
            z=z,
            steps=torch.zeros(size, dtype=torch.int32, device=device),
            halted=torch.ones(size, dtype=torch.bool, device=device),
            batch={k: v.clone() for k, v in batch.items()},
        )

    def refresh(self, net: ReasoningNetwork, carry: Carry, batch: Batch) -> Carry:
        """Halted slots restart from the initial states at step 0 with the new batch's example in the same slot."""
        reset = carry.halted
        y0, z0 = net.initial_states(reset.shape[0])
        states = reset.view(-1, 1, 1)
        return Carry(
            y=torch.where(states, y0, carry.y),
            z=torch.where(states, z0, carry.z),
            steps=carry.steps.masked_fill(reset, 0),
            halted=carry.halted,
            batch={k: torch.where(reset.view(-1, *[1] * (v.dim() - 1)), batch[k], v) for k, v in carry.batch.items()},
        )

    # --- one segment -------------------------------------------------------------------------------------------

    @staticmethod
    def cycle(net: ReasoningNetwork, y: Tensor, z: Tensor, x: Tensor, latent_steps: int) -> tuple[Tensor, Tensor]:
        """One recursion cycle: n latent updates z = f(z, y + x), then one answer update y = f(y, z)."""
        for _ in range(latent_steps):
            z = net.latent_step(z, y, x)
        return net.answer_step(y, z), z

    @abstractmethod
    def recurse(
        self, net: ReasoningNetwork, y: Tensor, z: Tensor, x: Tensor, progress: Progress, training: bool
    ) -> tuple[Tensor, Tensor]:
        """Unroll one segment's recursion from (y, z) with input x; return the new (y, z).

        This is where a method says how many latent and answer updates run and which of them carry gradient.
        """

    def depth(self, progress: Progress, training: bool) -> tuple[int, int] | None:
        """(outer, inner) recursion depth a segment runs at this progress, logged as train/depth_H and depth_L."""
        return None

    def evaluation_variants(self) -> dict[str, RecursionStrategy]:
        """Named strategy copies evaluated besides this one, each logged as {stage}/exact_accuracy@{name}."""
        return {}

    @abstractmethod
    def module_calls(self, progress: Progress, training: bool) -> tuple[int, int]:
        """(module calls per segment, how many of them carry gradient) that `recurse` makes: the declared window."""

    def calls_made(self, out: SegmentOutput, progress: Progress, training: bool) -> tuple[int, int]:
        """(module calls, with gradient) of a segment that ran: the window it drew (`SegmentOutput.calls`, RSM's
        stochastic depth), else the declared `module_calls`."""
        return out.calls if out.calls is not None else self.module_calls(progress, training)

    def run_segment(self, net: ReasoningNetwork, carry: Carry, progress: Progress, training: bool) -> SegmentOutput:
        """Run `segment`: one compiled graph with model.network.compile 'segment' (`ReasoningNetwork.segment`)."""
        return net.segment(self.segment)(net, self.compilable(net, carry), progress, training)

    @staticmethod
    def compilable(net: ReasoningNetwork, carry: Carry) -> Carry:
        """The carry a compiled segment is given: its batch with the sparse lookups done (`net.eager_lookups`)."""
        batch = net.eager_lookups(carry.batch)
        return carry if batch is carry.batch else replace(carry, batch=batch)

    @staticmethod
    def embed(net: ReasoningNetwork, batch: Batch) -> Tensor:
        """x [B, S, D] of a batch, with the puzzle rows `compilable` looked up where present."""
        return net.embed(batch["inputs"], batch["puzzle_ids"], batch.get(PUZZLE_ROWS))

    def segment(self, net: ReasoningNetwork, carry: Carry, progress: Progress, training: bool) -> SegmentOutput:
        """Embed the slots' examples, recurse once, and read the heads: tensor work only (no host syncs), so it
        compiles with no graph break."""
        x = self.embed(net, carry.batch)
        y, z = self.recurse(net, carry.y, carry.z, x, progress, training)
        return self.read_heads(net, y, z)

    @staticmethod
    def read_heads(net: ReasoningNetwork, y: Tensor, z: Tensor) -> SegmentOutput:
        """A segment's output from its final states: the decoded answer and the halt / continue logits."""
        q = net.halt_logits(y)
        return SegmentOutput(y=y, z=z, logits=net.decode(y), halt_logits=q[:, 0], continue_logits=q[:, 1])

    # --- loss --------------------------------------------------------------------------------------------------

    def loss(
        self,
        net: ReasoningNetwork,
        carry: Carry,
        out: SegmentOutput,
        progress: Progress,
        training: bool = True,
        slot_mask: Tensor | None = None,
    ) -> LossOutput:
        """lm loss (per-sequence mean over valid tokens) + halt_loss_weight * halting terms, summed over the batch.

        Args:
            net: The reasoning network (HRM's continue target runs it once more).
            carry: The carry the segment ran on (its examples hold the labels).
            out: The segment's output.
            progress: Training progress (curricula weight by it).
            training: Add the training-only terms (HRM's continue loss).
            slot_mask: Slots [B] bool that count; None counts all (the in-step schedule drops halted slots).
        """
        per_seq, exact, token_acc = sequence_loss(out.logits, carry.batch["labels"], self.loss_type)
        terms = {"lm_loss": per_seq, **self.halt_loss_terms(net, carry, out, progress, exact, training)}
        weights = self.sample_weights(carry, progress)
        if slot_mask is not None:
            weights = slot_mask.float() if weights is None else weights * slot_mask
        if weights is not None:
            terms = {k: v * weights.to(v.dtype) for k, v in terms.items()}
        summed = {k: v.sum() for k, v in terms.items()}
        halt_terms = [v for k, v in summed.items() if k != "lm_loss"]
        total = summed["lm_loss"]
        if halt_terms:
            total = total + self.halt_loss_weight * functools.reduce(operator.add, halt_terms)
        return LossOutput(total=total, terms=summed, exact=exact, token_accuracy=token_acc)

    def halt_loss_terms(
        self, net: ReasoningNetwork, carry: Carry, out: SegmentOutput, progress: Progress, exact: Tensor, training: bool
    ) -> dict[str, Tensor]:
        """Per-slot halting losses [B]: BCE(q_halt, exact), plus `extra_loss_terms` in training."""
        halt = F.binary_cross_entropy_with_logits(out.halt_logits, exact.to(out.halt_logits.dtype), reduction="none")
        terms = {"q_halt_loss": halt}
        if training:
            terms.update(self.extra_loss_terms(net, carry, out, progress))
        return terms

    def extra_loss_terms(
        self, net: ReasoningNetwork, carry: Carry, out: SegmentOutput, progress: Progress
    ) -> dict[str, Tensor]:
        """Further per-slot halting terms [B], training only (HRM's continue loss); none by default."""
        return {}

    def sample_weights(self, carry: Carry, progress: Progress) -> Tensor | None:
        """Per-slot loss weights [B] (CGAR's supervision weighting); None means all ones."""
        return None

    def unused_parameters(self, net: ReasoningNetwork) -> dict[str, str]:
        """Parameters this method never trains, mapped to the reason (checked by `strategies.conformance`)."""
        return {}

    # --- evaluation loop ---------------------------------------------------------------------------------------

    has_halt_head = True  # whether the method has a Q head: real halt logits and a halting rule that can fire

    def evaluation_steps(self, progress: Progress) -> int:
        """Reasoning steps `reasoning_steps` runs by default: N_sup segments (RSM: its evaluation depth H)."""
        return self.supervision_steps

    @torch.no_grad()
    def reasoning_steps(
        self, net: ReasoningNetwork, batch: Batch, progress: Progress, steps: int | None = None
    ) -> Iterator[ReasoningStep]:
        """The one evaluation loop: run the batch from the initial states and yield every reasoning step.

        A step is one supervision segment here (RSM: one outer step); `steps` runs that many instead of
        `evaluation_steps` (test-time depth scaling). Plain evaluation (`RecursiveReasoner.solve`), test-time compute
        and the conformance checks all read it; `halted` is `halt_signal`, the method's own halting rule.
        """
        carry = self.refresh(net, self.initial_carry(net, batch), batch)
        for _ in range(self.evaluation_steps(progress) if steps is None else steps):
            out = self.run_segment(net, carry, progress, training=False)
            carry = self.advance(carry, out, training=False)
            yield ReasoningStep(logits=out.logits, halt_logits=out.halt_logits, halted=self.halt_signal(out))

    # --- halting -----------------------------------------------------------------------------------------------

    @abstractmethod
    def halt_signal(self, out: SegmentOutput) -> Tensor:
        """The method's own halting rule [B] bool, the only one: training (`advance`), early exit at evaluation, and
        test-time early exit and confidence (through `reasoning_steps`)."""

    def advance(self, carry: Carry, out: SegmentOutput, training: bool) -> Carry:
        """Count the segment, decide which slots halt, and detach the states for the next segment."""
        steps = carry.steps + 1
        halted = steps >= self.supervision_steps
        if training and self.supervision_steps > 1:
            halted = halted | self.halt_signal(out)
            if self.halt_exploration > 0:
                explore = torch.rand(steps.shape, device=steps.device) < self.halt_exploration
                floor = torch.randint_like(steps, 2, self.supervision_steps + 1)
                halted = halted & (steps >= floor * explore)  # the floor where exploring, else 0
        return replace(carry, y=out.y.detach(), z=out.z.detach(), steps=steps, halted=halted)


def _constructor_signature(cls: type) -> inspect.Signature:
    """The full constructor signature of a strategy class: its own parameters, and where it takes `**kwargs` (passed
    on to `super().__init__`) its parent's, keyword-only, so the recorded hyperparameters include every default."""
    init = cls.__dict__["__init__"]
    own = inspect.signature(getattr(init, "__wrapped__", init))
    params = [p for p in own.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if any(p.kind is p.VAR_KEYWORD for p in own.parameters.values()):
        parent = next(c for c in cls.__mro__[1:] if "__init__" in c.__dict__)  # the class super().__init__ runs
        inherited = list(_constructor_signature(parent).parameters.values())[1:]
        names = {p.name for p in params}
        params += [p.replace(kind=p.KEYWORD_ONLY) for p in inherited
                   if p.name not in names and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return own.replace(parameters=params)
