"""Lightning callbacks for training recipes: `EMA` weight averaging, `DepthGrowthCallback`, `LateCheckpoints`
and `LatestRun`.

`EMA` is Lightning's `EMAWeightAveraging` with the reference code's rule (the average starts at the initial weights;
parameters only) that leaves the module's live parameters (the sparse puzzle-embedding table) out of the average, as
the reference code does: evaluation and checkpoints use their current values.

RSM (spec section 4b) grows its recursion depth during training; at each change `DepthGrowthCallback` can ramp the
learning rate from 0 back to the scheduler's value and scale the Adam moments once.

`LateCheckpoints` keeps a checkpoint every N steps over the last part of training, the members of a checkpoint
ensemble; `late_checkpoints` lists them in step order.

`LatestRun` keeps a `latest` link in the root directory pointing at the newest run's log directory, whose
`checkpoints/` hold that run's checkpoints: every run writes its own versioned directory, and `latest` finds it.

`PredictionWriter` writes `rr predict`'s answers to one file in the run's log directory and says where.

`RunSummary` writes what a run did to `rr_summary.json` in its log directory: training steps, FLOPs, seconds and
peak memory, the validation curve, and the test metrics (what `rr bakeoff` reads).

`KeepFreedMemory` keeps freed host memory in the process for reuse (`host_memory.keep_freed_memory`): faster
training on a CPU.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, EMAWeightAveraging
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

from recursive_reasoning.core.files import atomic_write
from recursive_reasoning.finite_guard import FiniteGuard
from recursive_reasoning.host_memory import keep_freed_memory


class _WithoutLive:
    """A module seen without its live parameters: what `AveragedModel.update_parameters` reads from."""

    def __init__(self, module: nn.Module, live: frozenset[str]) -> None:
        self._module = module
        self._live = live

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        """The module's parameters, live ones left out, in `named_parameters` order."""
        return (p for name, p in self._module.named_parameters(recurse=recurse) if name not in self._live)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


class EMA(EMAWeightAveraging):
    """EMA weight averaging by the reference code's rule, except for the parameters named by
    `pl_module.live_parameter_names()`.

    As the reference `EMAHelper`, the average is registered at the weights before the first averaged update (the
    initial weights, unless `update_starting_at_step` delays it), not copied from the weights after it as by
    `EMAWeightAveraging`; each update then sets average <- decay * average + (1 - decay) * weight, in a few
    multi-tensor ops counted on the host (`n_averaged`), so an update reads nothing from the device. Only parameters are
    averaged by default: averaging constant buffers (initial states, RoPE tables) would only make them drift by
    rounding, so validation, the end of training and the checkpoint use the live buffers.

    The live parameters (the puzzle-embedding table) are not averaged, and the averaged model keeps no copy of them
    (no memory or per-step work for the table): validation, the end of training and the checkpoint's `state_dict`
    use their current values, every other weight its average. The checkpoint stores the table (and the live buffers)
    once, shared by `state_dict` and `current_model_state`, and resuming restores the live table and the averages.

    Args:
        device: Device of the averaged model; None uses the module's.
        use_buffers: Average the buffers too, as `EMAWeightAveraging` does by default; False (the reference) uses the
            live buffers.
        decay: EMA decay per update.
        update_every_n_steps: Update the average every n optimiser steps.
        update_starting_at_step: First optimiser step (0-based) that updates the average; None starts at once.
        update_starting_at_epoch: First epoch whose end updates the average; None never updates on epochs.
        **kwargs: Passed on to `torch.optim.swa_utils.AveragedModel`.
    """

    def __init__(
        self,
        device: torch.device | str | int | None = None,
        use_buffers: bool = False,
        decay: float = 0.999,
        update_every_n_steps: int = 1,
        update_starting_at_step: int | None = None,
        update_starting_at_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            device=device,
            use_buffers=use_buffers,
            decay=decay,
            update_every_n_steps=update_every_n_steps,
            update_starting_at_step=update_starting_at_step,
            update_starting_at_epoch=update_starting_at_epoch,
            **kwargs,
        )
        self._live: frozenset[str] = frozenset()
        self._decay = decay
        self._n_averaged = 0
        self._factors: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Builds the averaged model (when fitting) and drops its copies of the live parameters."""
        super().setup(trainer, pl_module, stage)
        if stage == "fit" and self._average_model is not None:
            self._live = live_parameter_names(pl_module)
            for name in self._live:
                owner, _, attr = name.rpartition(".")
                setattr(self._average_model.module.get_submodule(owner), attr, None)

    @property
    def n_averaged(self) -> int:
        """Updates of the average so far, its registration included (the host-side count)."""
        return self._n_averaged

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Registers the average at the current weights before the first averaged update (the reference's rule)."""
        first = self._n_averaged == 0 and self.should_update(step_idx=trainer.global_step)
        if self._average_model is not None and first:
            self._update(pl_module)  # with nothing averaged yet: a copy

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Updates the average after an optimiser step that `should_update` selects (the parent's rule)."""
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx=trainer.global_step - 1):
            self._update(pl_module)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Updates the average at the end of an epoch that `should_update` selects (the parent's rule)."""
        if trainer.current_epoch > self._latest_update_epoch and self.should_update(epoch_idx=trainer.current_epoch):
            self._update(pl_module)
            self._latest_update_epoch = trainer.current_epoch

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Loads the averages into the module (the parent's way) and writes the count into the averaged model."""
        self._write_count()
        super().on_train_end(trainer, pl_module)

    def _update(self, pl_module: L.LightningModule) -> None:
        """One update of the average, as `AveragedModel.update_parameters` with the EMA rule but without its device
        counter: the first copies the weights, every later one sets average <- decay * average + (1 - decay) *
        weight; a few multi-tensor ops per device and dtype and no host sync. The averaged model's buffers are left
        alone unless averaged: validation, the end of training and checkpoints use the live ones."""
        averaged, current = zip(*self._pairs(pl_module), strict=True)
        current = [c.to(a.device) for a, c in zip(averaged, current, strict=True)]
        with torch.no_grad():
            if self._n_averaged == 0:
                torch._foreach_copy_(list(averaged), current)
                self._gate_factors(averaged[0].device)  # made now, so that no update uploads them
            else:
                keep = _guard_keep(pl_module)
                for (averages, weights), _ in _group_tensors_by_device_and_dtype([list(averaged), current]).values():
                    decay, rate = self._decay, 1 - self._decay
                    if keep is not None:  # after a non-finite step: factors 1 and 0, the average stays exactly
                        live, frozen = self._gate_factors(averages[0].device)
                        decay, rate = torch.where(keep.to(live.device), live, frozen).unbind()
                    mixed = torch._foreach_add(torch._foreach_mul(averages, decay), torch._foreach_mul(weights, rate))
                    torch._foreach_copy_(averages, mixed)
        self._n_averaged += 1

    def _gate_factors(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """The (decay, 1 - decay) factors of an update and those of a skipped one, (1, 0), on `device`, made once."""
        if device not in self._factors:
            self._factors[device] = (torch.tensor([self._decay, 1 - self._decay], device=device),
                                     torch.tensor([1.0, 0.0], device=device))
        return self._factors[device]

    def _write_count(self) -> None:
        """Writes the host-side count into the averaged model's `n_averaged` (what checkpoints store)."""
        if self._average_model is not None:
            self._average_model.n_averaged.fill_(self._n_averaged)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Writes the averaged weights as `state_dict` (as the parent does) with the current values of the live
        parameters and, unless averaged, of the buffers."""
        self._write_count()
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self._average_model is None:
            return
        current = checkpoint["current_model_state"]
        kept = set(self._live) if self._use_buffers else {*self._live, *(name for name, _ in pl_module.named_buffers())}
        checkpoint["state_dict"].update({name: current[name] for name in kept if name in current})

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Restores the averages (the parent's way) without the live parameters, which the averaged model lacks."""
        if self._average_model is not None and self._live:
            state = {k: v for k, v in checkpoint["state_dict"].items() if k not in self._live}
            checkpoint = {**checkpoint, "state_dict": state}
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        if self._average_model is not None:
            self._n_averaged = int(self._average_model.n_averaged)  # one read, at loading

    def _averaged_view(self, pl_module: L.LightningModule) -> L.LightningModule:
        """`pl_module` as the averaged model sees it: without the live parameters."""
        return _WithoutLive(pl_module, self._live) if self._live else pl_module  # type: ignore[return-value]

    def _pairs(self, pl_module: L.LightningModule) -> list[tuple[Tensor, Tensor]]:
        """(averaged, current) tensors of every averaged parameter, and of every buffer if buffers are averaged."""
        assert self._average_model is not None
        average = self._average_model.module
        view = self._averaged_view(pl_module)
        if not self._use_buffers:
            return list(zip(average.parameters(), view.parameters(), strict=True))
        averaged = itertools.chain(average.parameters(), average.buffers())
        current = itertools.chain(view.parameters(), pl_module.buffers())
        return list(zip(averaged, current, strict=True))

    def _swap_models(self, pl_module: L.LightningModule) -> None:
        """Swaps the averaged and the current values of every averaged tensor; the live parameters and buffers stay."""
        for average, current in self._pairs(pl_module):
            tmp = average.data.clone()
            average.data.copy_(current.data)
            current.data.copy_(tmp)

    def _copy_average_to_current(self, pl_module: L.LightningModule) -> None:
        """Copies the averaged values into the module; the live parameters keep their current values."""
        for average, current in self._pairs(pl_module):
            current.data.copy_(average.data)


def _guard_keep(pl_module: nn.Module) -> Tensor | None:
    """The module's `FiniteGuard.keep` (False after a non-finite loss or gradient), or None without a guard."""
    guard = getattr(pl_module, "guard", None)
    return guard.keep if isinstance(guard, FiniteGuard) else None


def live_parameter_names(pl_module: nn.Module) -> frozenset[str]:
    """Names of the parameters that `pl_module.live_parameter_names()` keeps out of averaging (none without it)."""
    names = getattr(pl_module, "live_parameter_names", None)
    live = frozenset(names()) if callable(names) else frozenset()
    unknown = live - {name for name, _ in pl_module.named_parameters()}
    if unknown:
        raise ValueError(
            f"live_parameter_names() of {type(pl_module).__name__} names {sorted(unknown)}, which are not among its "
            "parameters; return names as in named_parameters()."
        )
    return live


class DepthGrowthCallback(L.Callback):
    """Ramp the learning rate after each depth change of the strategy and optionally scale the Adam moments.

    Each training step the callback asks the strategy for its training depth
    (`pl_module.strategy.depth(pl_module.progress(), True)`). At a change (not at the first step observed) it
    multiplies every Adam state's `exp_avg` and `exp_avg_sq` by `moment_scale_on_growth` once; for the next
    `lr_ramp_steps` optimiser steps it multiplies every param group's lr by k / lr_ramp_steps (k = steps since the
    change, so the ramp starts at 0) and restores the scheduler's value after the step.

    Args:
        lr_ramp_steps: Length of the lr ramp after each depth change, in optimiser steps; 0 disables it.
        moment_scale_on_growth: Factor applied to the Adam moments at a depth change; None leaves them alone.
    """

    def __init__(self, lr_ramp_steps: int = 0, moment_scale_on_growth: float | None = None) -> None:
        if lr_ramp_steps < 0:
            raise ValueError(f"lr_ramp_steps must be >= 0, got {lr_ramp_steps}.")
        if moment_scale_on_growth is not None and moment_scale_on_growth < 0:
            raise ValueError(f"moment_scale_on_growth must be >= 0, got {moment_scale_on_growth}.")
        self.lr_ramp_steps = lr_ramp_steps
        self.moment_scale_on_growth = moment_scale_on_growth
        self.depth: tuple[int, ...] | None = None
        self.change_step: int | None = None
        self._ramped: list[tuple[dict[str, Any], float, float]] = []

    def ramp_factor(self, step: int) -> float:
        """The lr multiplier at optimiser step `step`: k / lr_ramp_steps for k < lr_ramp_steps steps after a change."""
        if self.change_step is None or self.lr_ramp_steps == 0:
            return 1.0
        return min(1.0, max(0, step - self.change_step) / self.lr_ramp_steps)

    @staticmethod
    def scale_moments(optimizer: torch.optim.Optimizer, factor: float) -> None:
        """Multiply every parameter state's `exp_avg` and `exp_avg_sq` by `factor` in place."""
        for state in optimizer.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].mul_(factor)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        depth = tuple(pl_module.strategy.depth(pl_module.progress(), True))
        if self.depth is not None and depth != self.depth:
            self.change_step = step
            if self.moment_scale_on_growth is not None:
                for optimizer in trainer.optimizers:
                    self.scale_moments(optimizer, self.moment_scale_on_growth)
        self.depth = depth
        factor = self.ramp_factor(step)
        self._ramped = []
        if factor == 1.0:
            return
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                original = group["lr"]
                group["lr"] = original * factor
                self._ramped.append((group, original, group["lr"]))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        for group, original, ramped in self._ramped:
            if group["lr"] == ramped:  # a step scheduler has already written its next value: keep that one
                group["lr"] = original
        self._ramped = []

    def state_dict(self) -> dict[str, Any]:
        return {"depth": self.depth, "change_step": self.change_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        depth = state_dict.get("depth")
        self.depth = tuple(depth) if depth is not None else None
        self.change_step = state_dict.get("change_step")


_LATE_NAME = re.compile(r"late-step(\d+)\.ckpt")


class LateCheckpoints(L.Callback):
    """Keep a checkpoint every `every_n_steps` optimiser steps over the last `last_fraction` of training.

    The checkpoints are the members of a checkpoint ensemble. After each training batch whose optimiser steps reach
    a new multiple of `every_n_steps`, the callback saves ``late-step{global_step}.ckpt`` if ``global_step >=
    start_step(max_steps) = ceil((1 - last_fraction) * max_steps)``; none is ever deleted. With one optimiser step
    per batch these are exactly the multiples of `every_n_steps` from the start step on: max_steps 10,
    every_n_steps 2 and last_fraction 0.5 keep steps 6, 8 and 10. (With several steps per batch, as in the `batch`
    supervision schedule, a batch that passes a multiple is saved at its own final step.)

    A plain callback rather than a `ModelCheckpoint`, so adding it neither replaces the trainer's default checkpoint
    nor becomes `trainer.checkpoint_callback`. It saves with `trainer.save_checkpoint` (call it on every rank; rank 0
    writes), so the trainer's checkpoint IO (the project's atomic writer) and every callback's checkpoint state apply.

    Args:
        every_n_steps: Optimiser steps between kept checkpoints (>= 1).
        last_fraction: Part of `trainer.max_steps` at the end of training that is covered, in (0, 1].
        dirpath: Directory of the checkpoints; None uses the directory of the trainer's `ModelCheckpoint` if it has
            one, else ``{trainer.log_dir}/checkpoints`` (where Lightning's default checkpoint would go).
    """

    def __init__(self, every_n_steps: int, last_fraction: float = 0.2, dirpath: str | None = None) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"every_n_steps must be an integer >= 1, got {every_n_steps!r}.")
        if not 0.0 < last_fraction <= 1.0:
            raise ValueError(f"last_fraction must be in (0, 1] (the final part of max_steps kept), got {last_fraction}.")
        self.every_n_steps = every_n_steps
        self.last_fraction = float(last_fraction)
        self.dirpath: Path | None = None if dirpath is None else Path(dirpath)
        self._previous_step = 0

    def start_step(self, max_steps: int) -> int:
        """The first global step that may be kept: ``ceil((1 - last_fraction) * max_steps)``."""
        return math.ceil(round((1.0 - self.last_fraction) * max_steps, 9))

    def directory(self, trainer: L.Trainer) -> Path:
        """Where the checkpoints go: `dirpath`, else beside the trainer's `ModelCheckpoint`, else log_dir/checkpoints.

        Resolved when saving, after every `ModelCheckpoint` (which Lightning sets up last) has resolved its own.
        """
        if self.dirpath is not None:
            return self.dirpath
        main = getattr(trainer.checkpoint_callback, "dirpath", None)
        return Path(main) if main is not None else Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Checks, before any step is taken, that training has a step budget to take the last part of."""
        if stage == "fit" and (trainer.max_steps is None or trainer.max_steps <= 0):
            raise ValueError(
                f"LateCheckpoints needs Trainer(max_steps=...) > 0 to know where the last {self.last_fraction:g} of "
                f"training begins, got max_steps={trainer.max_steps}."
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._previous_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, previous = trainer.global_step, self._previous_step
        self._previous_step = step
        if step // self.every_n_steps <= previous // self.every_n_steps or step < self.start_step(trainer.max_steps):
            return
        if trainer.sanity_checking or trainer.fast_dev_run:
            return
        trainer.save_checkpoint(self.directory(trainer) / f"late-step{step}.ckpt", weights_only=False)


def late_checkpoints(directory: str | Path) -> list[Path]:
    """The ``late-step{N}.ckpt`` files that `LateCheckpoints` wrote in `directory`, sorted by step N."""
    found = [(int(m.group(1)), p) for p in Path(directory).iterdir() if (m := _LATE_NAME.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


class LatestRun(L.Callback):
    """Point ``{default_root_dir}/{name}`` at the log directory of the newest run that has saved a checkpoint.

    Each run logs and checkpoints into its own ``lightning_logs/version_N`` (Lightning's default when the
    `ModelCheckpoint` has no dirpath), so no run replaces an earlier run's files; the link, a relative symlink
    replaced atomically at the run's first checkpoint, names the newest one: ``runs/demo_sudoku/latest/checkpoints/
    last.ckpt``. Resuming through the link works: it moves only when the resumed run saves its first checkpoint.

    Args:
        name: Name of the link inside the trainer's `default_root_dir`.
    """

    def __init__(self, name: str = "latest") -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"LatestRun name must be a plain file name such as 'latest', got {name!r}.")
        self.name = name
        self._linked: str | None = None

    def link(self, trainer: L.Trainer) -> Path | None:
        """Make the link point at `trainer.log_dir` (global rank 0 only); None when the run has no own log directory."""
        root, log_dir = Path(trainer.default_root_dir), trainer.log_dir
        if not trainer.is_global_zero or log_dir is None or Path(log_dir).resolve() == root.resolve():
            return None
        link = root / self.name
        if link.exists() and not link.is_symlink():
            raise FileExistsError(f"{link} exists and is not a link; LatestRun would replace it. Move it away or pass "
                                  "another LatestRun name")
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".{self.name}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(Path(log_dir).resolve(), root.resolve()), tmp)
        os.replace(tmp, link)
        return link

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Moves the link to this run at its first checkpoint."""
        if self._linked != trainer.log_dir:
            self.link(trainer)
            self._linked = trainer.log_dir


class PredictionWriter(BasePredictionWriter):
    """Write every prediction batch of `rr predict` to ``{log_dir}/predictions.pt`` (per rank under DDP) and say where.

    The file holds each predict_step output key concatenated over batches (answer tokens [N, L], steps, halt logits
    or confidence) and `indices` [N], the dataset index of every row, so rows map back to the data module's split.

    Args:
        output_dir: Directory of the file; None uses the trainer's log directory (its default root without a logger).
    """

    def __init__(self, output_dir: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.path: Path | None = None

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        if predictions and isinstance(predictions[0], list):  # one list per dataloader: the first (rr has one)
            predictions = predictions[0]
        if batch_indices and batch_indices[0] and isinstance(batch_indices[0][0], list):
            batch_indices = batch_indices[0]
        if not predictions:
            return
        rows = {key: torch.cat([p[key].detach().cpu() for p in predictions]) for key in predictions[0]}
        rows["indices"] = torch.as_tensor([i for batch in batch_indices for i in batch], dtype=torch.long)
        directory = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        name = "predictions.pt" if trainer.world_size == 1 else f"predictions_rank{trainer.global_rank}.pt"
        self.path = directory / name
        atomic_write(self.path, lambda handle: torch.save(rows, handle))
        rank_zero_info(f"rr predict: {len(rows['indices'])} predictions written to {self.path} (torch.load it: "
                       f"keys {', '.join(rows)})")


class KeepFreedMemory(L.Callback):
    """At setup, make the C allocator keep freed memory for reuse instead of page-faulting each step's activations in
    again (`host_memory.keep_freed_memory`). For training on a CPU: at the paper's Sudoku size 10% (batch 768) to 44%
    (batch 32) more training throughput (`docs/benchmarks.md`). The process then holds its peak memory until it
    exits, as a GPU's caching allocator does."""

    def __init__(self) -> None:
        self.applied: bool | None = None  # None until the first setup

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.applied is None:
            self.applied = keep_freed_memory()


class RunSummary(L.Callback):
    """Write `rr_summary.json` in the run's log directory: steps, cumulative training FLOPs (`train/flops`), training
    seconds (validation excluded) and peak memory at every validation and at the end of fitting, and the metrics of
    a test run. Rewritten atomically at each point, so a killed run leaves the last complete summary.

    Args:
        filename: Name of the summary file in `trainer.log_dir`.
    """

    def __init__(self, filename: str = "rr_summary.json") -> None:
        self.filename = filename
        self._summary: dict[str, Any] = {}
        self._train_seconds = 0.0
        self._since: float | None = None

    # --- the clock: training time only -------------------------------------------------------------------------

    def _pause(self) -> None:
        if self._since is not None:
            self._train_seconds += time.perf_counter() - self._since
            self._since = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._summary = {"stage": "fit", "complete": False, "log_dir": trainer.log_dir, "curve": [],
                         "start_step": trainer.global_step, "world_size": trainer.world_size}
        self._since = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self._summary.get("stage") != "fit":
            return
        point = {**self._progress(trainer, pl_module), **_metrics(trainer, "val/")}
        self._summary["curve"].append(point)
        self._write(trainer)
        self._since = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()
        self._summary.update(self._progress(trainer, pl_module), complete=True,
                             last_checkpoint=_last_checkpoint(trainer))
        self._write(trainer)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._summary = {"stage": "test", "complete": True, "log_dir": trainer.log_dir,
                         "steps": trainer.global_step, "train_flops": getattr(pl_module, "train_flops", 0),
                         "peak_memory_mib": _peak_memory_mib(pl_module.device), **_metrics(trainer, "test/")}
        self._write(trainer)

    def _progress(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {"steps": trainer.global_step, "train_flops": getattr(pl_module, "train_flops", 0),
                "train_seconds": round(self._train_seconds, 3), "peak_memory_mib": _peak_memory_mib(pl_module.device)}

    def _write(self, trainer: L.Trainer) -> None:
        if trainer.is_global_zero and trainer.log_dir is not None:
            data = json.dumps(self._summary, indent=1).encode()
            atomic_write(Path(trainer.log_dir) / self.filename, lambda handle: handle.write(data))


def _metrics(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    """The trainer's logged metrics of one stage, as plain floats."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


def _last_checkpoint(trainer: L.Trainer) -> str | None:
    """The newest checkpoint `ModelCheckpoint` wrote (its `last.ckpt` when it keeps one)."""
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    return getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "") or None


def _peak_memory_mib(device: torch.device) -> float:
    """Peak memory so far: the device's peak allocation on a GPU, the process's peak resident size on a CPU."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
