"""Optimiser and learning-rate schedule of the recursive reasoning models.

:class:`OptimConfig` holds the settings. :class:`AdamATan2` is a plain PyTorch version of the Adam-atan2 update used by the reference code (whose public
package is a CUDA-only extension): Adam with the ``m / (sqrt(v) + eps)`` ratio replaced by ``atan2(m, sqrt(v))``,
so there is no epsilon, and with decoupled weight decay. :func:`lr_lambda` is the multiplicative factor of the
reference schedule: linear warmup, then constant or cosine decay to a minimum ratio; :func:`reference_schedule` is
the LR scheduler that gives the k-th update the reference's factor for step k. :class:`SignSGD` trains
the sparse puzzle-embedding table (summing its gradient over ranks itself under DDP), :class:`OptimizerBundle` steps
several optimisers as one, and :func:`clip_gradients` clips every gradient except those that SignSGD steps.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

from recursive_reasoning.finite_guard import FiniteGuard

_LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass
class OptimConfig:
    """Optimiser and schedule (spec section 6).

    Args:
        lr: Peak learning rate of AdamATan2.
        weight_decay: Decoupled weight decay of AdamATan2.
        betas: Adam moment decay rates (b1, b2).
        warmup_steps: Linear warmup, in optimiser steps: update k (from 1) runs at lr * k / warmup_steps until the
            peak at update warmup_steps (the reference's indexing; the first update is not at lr 0).
        lr_min_ratio: Cosine decay to lr * lr_min_ratio at the last step; 1.0 keeps the lr constant after warmup.
        puzzle_emb_lr: Learning rate of the SignSGD puzzle-embedding table (same warmup and schedule).
        puzzle_emb_weight_decay: Decoupled weight decay of the puzzle-embedding table.
    """

    lr: float = 1e-4
    weight_decay: float = 1.0
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 2000
    lr_min_ratio: float = 1.0
    puzzle_emb_lr: float = 1e-4
    puzzle_emb_weight_decay: float = 1.0


class AdamATan2(torch.optim.Optimizer):
    """Adam with an atan2 update and decoupled weight decay, no epsilon.

    At step ``t`` (starting at 1), for every parameter ``p`` with gradient ``g``::

        p  <- p * (1 - lr * wd)
        m  <- b1 * m + (1 - b1) * g
        v  <- b2 * v + (1 - b2) * g^2
        p  <- p - lr / (1 - b1^t) * atan2(m, sqrt(v / (1 - b2^t)))

    Parameters in bfloat16 or float16 keep their moments in float32 and are updated in float32 before being
    written back. A step runs each op once per device and dtype over all parameters (``torch._foreach_*``), with
    the same values as the op per parameter; the step counts live on the CPU, so no step reads the device.

    Args:
        params: Iterable of parameters or of parameter-group dicts.
        lr: Learning rate, a float or a 0-dim tensor.
        betas: Decay rates ``(b1, b2)`` of the first and second moments.
        weight_decay: Decoupled weight decay coefficient.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float | Tensor = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        weight_decay: float = 0.0,
    ) -> None:
        if isinstance(lr, Tensor) and lr.numel() != 1:
            raise ValueError("AdamATan2: a tensor lr must hold a single value.")
        if float(lr) < 0.0:
            raise ValueError(f"AdamATan2: invalid learning rate {float(lr)}; it must be >= 0.")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamATan2: invalid betas {betas}; each must be in [0, 1).")
        if weight_decay < 0.0:
            raise ValueError(f"AdamATan2: invalid weight_decay {weight_decay}; it must be >= 0.")
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})
        self._host_steps: dict[int, tuple[weakref.ref, int]] = {}  # id(step tensor) -> (the tensor, its count)

    @torch.no_grad()
    def step(self, closure: Callable[[], float | Tensor] | None = None, keep: Tensor | None = None
             ) -> float | Tensor | None:
        """Performs one optimisation step: a few multi-tensor (``torch._foreach_*``) ops per device and dtype.

        Args:
            closure: Optional callable that re-evaluates the model and returns the loss.
            keep: Optional 0-dim bool device tensor (`FiniteGuard.keep`); where False the step leaves the parameters
                and moments exactly as they are, decided on the device (non-finite gradients included). The host
                step counts advance either way.

        Returns:
            The loss returned by ``closure``, or None.

        Raises:
            RuntimeError: If a parameter has a sparse gradient.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError(
                    "AdamATan2 does not support sparse gradients; train sparse tables (e.g. puzzle "
                    "embeddings) with a dedicated sparse optimiser."
                )
            states = [self._state_of(p) for p in params]
            tensors = [params, [p.grad for p in params], *([s[k] for s in states] for k in _ADAM_STATE)]
            for (_, dtype), (lists, _) in self._group_tensors_by_device_and_dtype(tensors).items():
                counts = [self._advance(step) for step in lists[-1]]
                _foreach_update(*lists, counts, dtype in _LOW_PRECISION, group["lr"], *group["betas"],
                                group["weight_decay"], keep)
        return loss

    def _advance(self, step: Tensor) -> int:
        """The number of the update a step tensor is about to count, followed on the host: a tensor is read once
        (when its state was loaded), so a step reads nothing."""
        ref, count = self._host_steps.get(id(step), (None, 0))
        count = (count if ref is not None and ref() is step else int(step)) + 1
        self._host_steps[id(step)] = (weakref.ref(step), count)
        return count

    def _state_of(self, p: Tensor) -> dict[str, Tensor]:
        """``p``'s state, created at its first step: a float32 step count on the CPU (followed on the host by
        `_advance`) and the two moments, in float32 for low-precision parameters."""
        state = self.state[p]
        if len(state) == 0:
            compute_dtype = torch.float32 if p.dtype in _LOW_PRECISION else p.dtype
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            self._host_steps[id(state["step"])] = (weakref.ref(state["step"]), 0)
            state["exp_avg"] = torch.zeros_like(p, dtype=compute_dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=compute_dtype, memory_format=torch.preserve_format)
        return state


_ADAM_STATE = ("exp_avg", "exp_avg_sq", "step")


def _foreach_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    counts: list[int],
    low_precision: bool,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    weight_decay: float,
    keep: Tensor | None = None,
) -> None:
    """The AdamATan2 update of parameters of one device and dtype, in place: each op of the per-parameter update
    once over the whole list (low-precision parameters are updated in float32 copies and written back).

    With `keep` (0-dim bool), a False leaves every tensor as it is: the gradients are replaced by zeros (`_gated`,
    so non-finite ones cannot leak), the decay factors become 1 and the step 0. Where `keep` is True the
    factors are the same float32 numbers as without it, so the values are bit-identical."""
    torch._foreach_add_(steps, 1)  # the CPU step tensors of the state dict; `counts` are their new values
    if low_precision:
        values = [torch.empty_like(p, dtype=torch.float32) for p in params]
        grads, fp32_grads = [torch.empty_like(g, dtype=torch.float32) for g in grads], grads
        torch._foreach_copy_(values, params)
        torch._foreach_copy_(grads, fp32_grads)
    else:
        values = params
    decay, first_decay, second_decay, scale = 1 - lr * weight_decay, beta1, beta2, None
    if keep is not None:
        zero, one, kept, skipped = _gate_constants(keep.device, beta1, beta2)
        grads = _gated(grads, keep, zero)
        decay = torch.where(keep, decay, one)
        first_decay, second_decay, scale = torch.where(keep, kept, skipped).unbind()

    torch._foreach_mul_(values, decay)
    torch._foreach_mul_(exp_avgs, first_decay)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, second_decay)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

    denoms = torch._foreach_div(exp_avg_sqs, [1 - beta2**t for t in counts])
    torch._foreach_sqrt_(denoms)
    updates = _foreach_atan2(exp_avgs, denoms)
    corrections = [1 - beta1**t for t in counts]
    torch._foreach_mul_(updates, torch._foreach_div([lr] * len(corrections), corrections)
                        if isinstance(lr, Tensor) else [lr / c for c in corrections])
    if scale is not None:
        torch._foreach_mul_(updates, scale)  # 1 or 0; finite: the moments were never given a non-finite gradient
    torch._foreach_sub_(values, updates)
    if low_precision:
        torch._foreach_copy_(params, values)


def _gated(grads: list[Tensor], keep: Tensor, zero: Tensor) -> list[Tensor]:
    """``[torch.where(keep, g, zero) for g in grads]`` in two kernels whatever the number of tensors: one `where` over
    their concatenation, split back into views of the same shapes (the values are the same: `where` only selects)."""
    flat = torch.where(keep, torch.cat([g.reshape(-1) for g in grads]), zero)
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]


@functools.cache
def _gate_constants(device: torch.device, beta1: float, beta2: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The float32 constants of a guarded step on `device`, made once: 0, 1, and the moments' decays and the update's
    scale of a kept step ([b1, b2, 1]) and of a skipped one ([1, 1, 0])."""
    return (torch.zeros((), device=device), torch.ones((), device=device),
            torch.tensor([beta1, beta2, 1.0], device=device), torch.tensor([1.0, 1.0, 0.0], device=device))


def _foreach_atan2(ys: list[Tensor], xs: list[Tensor]) -> list[Tensor]:
    """``[atan2(y, x) for y, x in zip(ys, xs)]`` (torch has no ``_foreach_atan2``), as torch's own foreach ops run:
    one kernel over the concatenation on a device with fused multi-tensor kernels (CUDA: every element goes through
    the same code there, so the values are those of the per-tensor op), one op per tensor elsewhere (a CPU computes
    the last elements of a tensor by a scalar path that may differ from its vector path by an ulp)."""
    if ys[0].device.type not in _FUSED_FOREACH_DEVICES:
        return [torch.atan2(y, x) for y, x in zip(ys, xs, strict=True)]
    flat = torch.atan2(torch.cat([y.reshape(-1) for y in ys]), torch.cat([x.reshape(-1) for x in xs]))
    return [part.view_as(y) for part, y in zip(flat.split([y.numel() for y in ys]), ys, strict=True)]


_FUSED_FOREACH_DEVICES = frozenset(_get_foreach_kernels_supported_devices())


def lr_lambda(step: int, warmup_steps: int, total_steps: int | None, min_ratio: float = 1.0) -> float:
    """Learning-rate factor of the reference schedule: linear warmup, then cosine decay from 1 to ``min_ratio``.

    Args:
        step: The update's number, counted from 1 as the reference's ``train_state.step`` (incremented before the
            rate is computed): the first update has factor ``1 / warmup_steps``, not 0.
        warmup_steps: Number of warmup steps; the factor is ``step / max(1, warmup_steps)`` before it ends.
        total_steps: Total number of steps; the cosine reaches ``min_ratio`` there and stays. May be None only
            when ``min_ratio == 1.0`` (constant after warmup).
        min_ratio: Final factor of the cosine decay; 1.0 gives a constant rate after warmup.

    Returns:
        The multiplicative factor applied to the base learning rate.

    Raises:
        ValueError: If ``total_steps`` is None while ``min_ratio != 1.0`` (checked at every step, warmup included).
    """
    if total_steps is None and min_ratio != 1.0:
        raise ValueError(
            f"lr_lambda: total_steps is required for a cosine decay (min_ratio={min_ratio}); "
            "pass total_steps or use min_ratio=1.0 for a constant rate after warmup."
        )
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if total_steps is None or min_ratio == 1.0:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def reference_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int | None, min_ratio: float = 1.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR``, stepped after every update, under which update k (k = 1, 2, ...) runs at ``lr_lambda(k)``.

    The scheduler's count is the number of updates done, one less than the reference's step of the next update, so
    a bare ``LambdaLR(optimizer, lr_lambda)`` would run one step behind (the first update at lr 0).

    Args:
        optimizer: The optimiser (e.g. an OptimizerBundle) whose groups' base rates are scaled.
        warmup_steps, total_steps, min_ratio: As for :func:`lr_lambda`.

    Raises:
        ValueError: If ``total_steps`` is None while ``min_ratio != 1.0``.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda done: lr_lambda(done + 1, warmup_steps, total_steps, min_ratio)
    )


class SignSGD(torch.optim.Optimizer):
    """Sign descent with decoupled weight decay for sparse tables: w <- w * (1 - lr * wd) - lr * sign(g).

    Built for the puzzle-embedding table: with a sparse gradient only the rows present in the batch are touched
    (decay included), and gradients of repeated ids are summed before the sign. Dense gradients update every row.
    The sparse step has fixed shapes (the gradient's rows are sorted and summed by segment, never coalesced), so it
    reads nothing from the device and a compiled or CUDA-graphed step can hold it.

    Under data parallelism (``torch.distributed`` initialised with more than one rank) the table is left out of DDP's
    all-reduce, so the step first sums the gradient over the ranks: a sparse gradient is all-gathered as (ids, rows)
    of a fixed size (every rank's row count, exchanged on the host through a gloo group; rr's loaders give every rank
    the same count, so nothing is padded) and never densified; a dense one is all-reduced. Every rank then applies the
    same update, so the replicas stay equal. All ranks must call ``step`` together (a rank without a gradient
    contributes nothing).

    Sign descent ignores the gradient's scale, so gradient clipping does not change this update. torch's clipping
    rejects sparse gradients, and under DDP this table's gradient is still rank-local when clipping runs; clip the
    other parameters only, with :func:`clip_gradients`.

    Args:
        params: Iterable of parameters or of parameter-group dicts.
        lr: Learning rate.
        weight_decay: Decoupled weight decay coefficient.
        distributed: Sum the gradients over the ranks of the default process group when one with more than one
            rank is initialised; False steps on each rank's local gradient (for tables synchronised elsewhere).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        distributed: bool = True,
    ) -> None:
        if lr < 0.0 or weight_decay < 0.0:
            raise ValueError(f"SignSGD: lr and weight_decay must be >= 0, got {lr} and {weight_decay}.")
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.distributed = distributed
        self._host_group: Any = None

    def _synchronised(self) -> bool:
        """Whether gradients must be summed over ranks: asked for, and a multi-rank process group is running."""
        return self.distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    @torch.no_grad()
    def step(self, closure: Callable[[], float | Tensor] | None = None, keep: Tensor | None = None
             ) -> float | Tensor | None:
        """Performs one optimisation step (on the gradients summed over ranks when distributed).

        Args:
            closure: Optional callable that re-evaluates the model and returns the loss.
            keep: Optional 0-dim bool device tensor (`FiniteGuard.keep`): where False no row changes.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        synchronised = self._synchronised()
        for group in self.param_groups:
            lr, decay = group["lr"], group["weight_decay"]
            for p in group["params"]:
                grad = self._summed_over_ranks(p) if synchronised else _local_gradient(p)
                if isinstance(grad, tuple):
                    _sign_update_rows(p, *grad, lr, decay, keep)
                elif grad is not None:
                    stepped = p * (1 - lr * decay) - lr * grad.sign()
                    p.copy_(stepped if keep is None else torch.where(keep, stepped, p))
        return loss

    def _summed_over_ranks(self, p: Tensor) -> Tensor | tuple[Tensor, Tensor] | None:
        """``p``'s gradient summed over all ranks: (ids [n], rows [n, ...]) of every rank for a sparse one (repeated
        ids summed by the update), a tensor for a dense one, None when no rank has one."""
        grad = _local_gradient(p)
        kind = _NO_GRAD if grad is None else _SPARSE if isinstance(grad, tuple) else _DENSE
        headers = self._host_gather(torch.tensor([kind, grad[0].shape[0] if kind == _SPARSE else 0]))
        kinds, counts = headers[:, 0].tolist(), headers[:, 1].tolist()  # host tensors: no device read
        if set(kinds) == {_NO_GRAD}:
            return None
        if _DENSE in kinds and _SPARSE in kinds:
            raise RuntimeError(
                "SignSGD: the ranks disagree on a parameter's gradient layout (sparse on some, dense on others); "
                "every rank must run the same model."
            )
        if _DENSE in kinds:
            total = grad.clone() if grad is not None else torch.zeros_like(p)
            dist.all_reduce(total)
            return total
        return _gathered_rows(p, grad, counts)

    def _host_gather(self, header: Tensor) -> Tensor:
        """Every rank's CPU ``header`` [k] stacked [world, k], through a gloo group (the default one when it is gloo;
        otherwise one made at the first call, which every rank reaches together): no device sync."""
        if self._host_group is None:
            self._host_group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        headers = [torch.empty_like(header) for _ in range(dist.get_world_size())]
        dist.all_gather(headers, header, group=self._host_group)
        return torch.stack(headers)


def _local_gradient(p: Tensor) -> Tensor | tuple[Tensor, Tensor] | None:
    """``p``'s gradient on this rank: (ids [n], rows [n, ...]) of a row-sparse one, uncoalesced (ids may repeat);
    the tensor of a dense one; or None."""
    grad = p.grad
    if grad is None or not grad.is_sparse:
        return grad
    _require_row_sparse(grad)
    if grad.is_coalesced():
        return grad.indices()[0], grad.values()
    return grad._indices()[0], grad._values()


def _sign_update_rows(p: Tensor, ids: Tensor, rows: Tensor, lr: float, decay: float, keep: Tensor | None) -> None:
    """The decayed sign step of the rows ``ids`` of ``p``, in place, with the rows of repeated ids summed first.

    Fixed shapes only: the ids are sorted, equal neighbours form a segment whose rows are summed (``index_add_``), and
    every position writes its row's new value, so repeated ids write the same value."""
    if ids.numel() == 0:
        return
    order = torch.argsort(ids, stable=True)
    ids, rows = ids[order], rows[order].to(p.dtype)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[1:] = ids[1:] != ids[:-1]
    segment = starts.cumsum(0) - 1
    sums = torch.zeros_like(rows).index_add_(0, segment, rows)
    current = p[ids]
    stepped = current * (1 - lr * decay) - lr * sums[segment].sign()
    p[ids] = stepped if keep is None else torch.where(keep, stepped, current)


def _require_row_sparse(grad: Tensor) -> None:
    """Rejects sparse gradients that are not sparse over rows only (the layout of ``nn.Embedding(sparse=True)``)."""
    if grad.sparse_dim() != 1:
        raise RuntimeError(
            f"SignSGD: a sparse gradient must be sparse over its first dimension only (sparse_dim 1, as from "
            f"nn.Embedding(sparse=True)); got sparse_dim {grad.sparse_dim()}."
        )


_NO_GRAD, _SPARSE, _DENSE = 0, 1, 2


def _gathered_rows(p: Tensor, grad: tuple[Tensor, Tensor] | None, counts: list[int]) -> tuple[Tensor, Tensor]:
    """Every rank's (ids, rows) (``counts[r]`` of them on rank r) concatenated: one fixed-size all-gather of each.
    Ranks with fewer rows pad with copies of a real row's id and zero rows, which change no sum."""
    longest = max(counts)
    ids, rows = grad if grad is not None else (p.new_zeros(0, dtype=torch.int64), p.new_zeros((0, *p.shape[1:])))
    ids, rows = ids.contiguous(), rows.to(p.dtype).contiguous()
    if ids.shape[0] < longest:
        ids = torch.cat([ids, ids.new_zeros(longest - ids.shape[0])])
        rows = torch.cat([rows, rows.new_zeros((longest - rows.shape[0], *rows.shape[1:]))])
    world = len(counts)
    all_ids = ids.new_empty(world * longest)
    all_rows = rows.new_empty((world * longest, *rows.shape[1:]))
    dist.all_gather_into_tensor(all_ids, ids)
    dist.all_gather_into_tensor(all_rows, rows)
    if min(counts) < longest:  # point the padding at a real row: its zero rows then leave every sum as it is
        real = next(r for r, n in enumerate(counts) if n) * longest
        padding = (torch.arange(longest) >= torch.tensor(counts).unsqueeze(1)).reshape(-1).to(all_ids.device)
        all_ids = torch.where(padding, all_ids[real], all_ids)
    return all_ids, all_rows


class OptimizerBundle(torch.optim.Optimizer):
    """Several optimisers stepped as one, so Lightning's automatic optimisation and one LR scheduler drive them all.

    `param_groups` is the concatenation of the members' groups (a scheduler scales each group's lr), and the state
    dict keeps each member's own state dict. A group's "name" (LearningRateMonitor's tag, e.g.
    `lr-OptimizerBundle/dense`) is this run's: loading a state dict keeps it, even from a checkpoint without names.

    With a `guard` (`FiniteGuard`), a step first folds the dense gradients into its flag and then gives the members
    its `keep`, so after a non-finite loss or gradient no member changes anything, decided on the device.

    Args:
        optimizers: The member optimisers, each over its own parameters.
        guard: The run's non-finite guard; its members must then take `keep` (AdamATan2, SignSGD).
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer], guard: FiniteGuard | None = None) -> None:
        if guard is not None:
            foreign = [type(opt).__name__ for opt in optimizers if not isinstance(opt, (AdamATan2, SignSGD))]
            if foreign:
                raise TypeError(f"OptimizerBundle: with a FiniteGuard every member must skip on the device (AdamATan2, "
                                f"SignSGD); {', '.join(foreign)} cannot. Pass guard=None to step it unguarded.")
        self.optimizers = optimizers
        self.guard = guard
        self.param_groups = [group for opt in optimizers for group in opt.param_groups]
        self.defaults = {}
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}
        self._optimizer_state_dict_post_hooks = {}
        self._optimizer_load_state_dict_pre_hooks = {}
        self._optimizer_load_state_dict_post_hooks = {}

    @property
    def state(self) -> dict[Tensor, Any]:  # type: ignore[override]
        """The members' per-parameter states, merged (read-only view)."""
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    def step(self, closure: Callable[[], float | Tensor] | None = None) -> float | Tensor | None:
        """Evaluates the closure once, then steps every member (guarded: skipped on the device after a failure)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.guard is None:
            for opt in self.optimizers:
                opt.step()
            return loss
        self.guard.observe_gradients([p.grad for group in self.param_groups for p in group["params"]
                                      if p.grad is not None and not p.grad.is_sparse])
        for opt in self.optimizers:
            opt.step(keep=self.guard.keep)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"members": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        members = state_dict.get("members")
        if members is None or len(members) != len(self.optimizers):
            raise ValueError(
                f"optimizer state holds {0 if members is None else len(members)} members, expected "
                f"{len(self.optimizers)}; the checkpoint was written with a different optimiser set-up."
            )
        names = [[group.get("name") for group in opt.param_groups] for opt in self.optimizers]
        for opt, sd, member_names in zip(self.optimizers, members, names):
            opt.load_state_dict(sd)
            for group, name in zip(opt.param_groups, member_names):  # a checkpoint from before groups had names
                if name is not None:
                    group["name"] = name
        # torch's load_state_dict gives each member new group dicts: share them again (in place, for every holder of
        # this list), or an LR scheduler would set the old ones and the members keep the checkpoint's learning rate
        self.param_groups[:] = [group for opt in self.optimizers for group in opt.param_groups]


def _sign_free_parameters(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    """The parameters of ``optimizer`` that no :class:`SignSGD` (alone or inside an OptimizerBundle) steps."""
    members = optimizer.optimizers if isinstance(optimizer, OptimizerBundle) else [optimizer]
    return [p for opt in members if not isinstance(opt, SignSGD) for group in opt.param_groups for p in group["params"]]


def clip_gradients(optimizer: torch.optim.Optimizer, clip_val: float, algorithm: str = "norm") -> Tensor | None:
    """Clips the gradients of the parameters that ``optimizer`` does not step by sign descent.

    SignSGD's update does not depend on the gradient's scale; its sparse gradients make torch's clipping fail
    (``NotImplementedError`` from ``linalg_vector_norm``), and under DDP they are still rank-local when clipping runs,
    so counting them in the norm would clip the dense weights differently on each rank.

    Args:
        optimizer: The optimiser (e.g. an OptimizerBundle) whose parameters' gradients are clipped.
        clip_val: The maximal total norm ("norm") or the maximal absolute value ("value").
        algorithm: "norm" (total 2-norm, as ``torch.nn.utils.clip_grad_norm_``) or "value".

    Returns:
        The total norm before clipping for "norm", None for "value".

    Raises:
        ValueError: If ``algorithm`` is neither "norm" nor "value".
    """
    params = _sign_free_parameters(optimizer)
    if algorithm == "norm":
        return torch.nn.utils.clip_grad_norm_(params, clip_val)
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, clip_val)
        return None
    raise ValueError(f"clip_gradients: unknown algorithm {algorithm!r}; choose 'norm' or 'value'.")
