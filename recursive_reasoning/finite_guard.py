"""`FiniteGuard`: the non-finite check of training, kept on the device.

A non-finite loss or gradient must never reach the weights or a checkpoint, but reading a flag on the host every step
would stall a GPU. The guard folds each step's check into a 0-dim device flag, `keep` (every loss and gradient so far
was finite), and the optimisers and the EMA skip their updates on the device while it is False, so from the first
non-finite step on nothing changes. The host reads the flag only at logging steps, before a checkpoint is written and
when training ends (`raise_if_tripped`), and stops the run there with the step and loss terms of the first failure.

Gradients are checked after DDP's all-reduce, so every rank reaches the same decision when a gradient is non-finite;
a rank-local non-finite loss with finite gradients skips that rank only until the next read, which every rank makes
together (the flags are summed over the ranks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

__all__ = ["FiniteGuard"]


class FiniteGuard:
    """A sticky device-side record of the first non-finite training loss or gradient (see the module docstring).

    Each observation costs a handful of device ops and no read: the flag, a count of the losses observed while it was
    still set (so the failing step is known from the host's list of their steps) and the loss terms of the latest loss
    observed while it was set: non-finite if the loss failed, finite if a gradient failed after it."""

    def __init__(self) -> None:
        self.keep: Tensor | None = None  # 0-dim bool: every loss and gradient observed so far was finite
        self._clean: Tensor | None = None  # 0-dim int64: losses observed while `keep` was set (the failing one too)
        self._first_values: Tensor | None = None  # [1 + terms]: the loss and its terms at the failing step
        self._one: Tensor | None = None  # the unit scale of the fused gradient check, made once
        self._terms: tuple[str, ...] = ()
        self._observed: list[int] = []  # the step of every loss observed since the last read

    def reset(self) -> None:
        """Forget every observation (a new fit)."""
        self.__init__()

    def observe_loss(self, values: Tensor, names: Sequence[str], step: int) -> None:
        """Fold a training loss into the flag: `values` [1 + k] float32 are the loss and its k terms (`names` names
        all of them), remembered until the flag drops."""
        values = values.detach()
        if self.keep is None:
            self._terms = tuple(names)
            self.keep = torch.ones((), dtype=torch.bool, device=values.device)
            self._clean = torch.zeros((), dtype=torch.int64, device=values.device)
            self._first_values = torch.zeros_like(values)
            self._one = torch.ones((), dtype=torch.float32, device=values.device)
        if tuple(names) == self._terms:
            self._first_values = torch.where(self.keep, values, self._first_values)
        self._observed.append(step)
        self._clean.add_(self.keep)
        self.keep = self.keep & (values[0] * 0 == 0)  # x * 0 is 0 for a finite x, NaN for inf and NaN

    def observe_gradients(self, grads: Sequence[Tensor]) -> None:
        """Fold dense gradients into the flag: one fused non-finite check per device and dtype, no host read."""
        if self.keep is None or not grads:
            return
        found = torch.zeros((), dtype=torch.float32, device=self.keep.device)
        for (device, _), ((group,), _) in _group_tensors_by_device_and_dtype([list(grads)]).items():
            found_here = found if device == found.device else torch.zeros((), device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(group, found_here, self._one.to(device))
            if found_here is not found:
                found = found + found_here.to(found.device)
        self.keep = self.keep & (found == 0)

    def flag(self) -> Tensor | None:
        """[1] float32 on the device: 1 where this rank has seen a failure (summed over ranks by the reader)."""
        return None if self.keep is None else (~self.keep).float().unsqueeze(0)

    def raise_if_tripped(self, ranks_tripped: float | None = None) -> None:
        """Read the flag on the host (one copy) and stop training with the first failure's step and values.

        Args:
            ranks_tripped: The number of ranks whose flag is set, already summed and read (e.g. with the logged
                metrics); None reads this rank's flag.

        Raises:
            FloatingPointError: A loss or gradient was non-finite; no update was applied from that step on.
        """
        if self.keep is None:
            return
        if ranks_tripped is None:
            ranks_tripped = float((~self.keep).float().cpu())
        if not ranks_tripped:  # every observation so far was finite: forget them
            self._observed.clear()
            self._clean.zero_()
            return
        local = torch.cat([(~self.keep).float().unsqueeze(0), self._clean.float().unsqueeze(0),
                           self._first_values]).cpu().tolist()
        tripped_here, failing, values = bool(local[0]), int(local[1]) - 1, local[2:]
        step = self._observed[failing] if tripped_here else None
        if not tripped_here:
            what = "another rank's training loss or gradient became non-finite"
        elif math.isfinite(values[0]):
            what = f"a gradient became non-finite at step {step} (the loss was finite)"
        else:
            detail = ", ".join(f"{name}={value:.4g}" for name, value in zip(self._terms[1:], values[1:]))
            what = f"the training loss is {values[0]} at step {step} ({detail})"
        raise FloatingPointError(
            f"{what}; from that step on no update was applied (the weights, the optimiser state and the EMA are those "
            "before it) and no checkpoint was written. Lower optim.lr, check the data, or use precision 32-true to "
            "find the cause"
        )

