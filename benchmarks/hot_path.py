"""Aten ops, host-device sync points, scalar uploads and collectives per training step and per evaluation segment.

Counts, not times: a `TorchDispatchMode` over one `Trainer.fit` training step of each recipe (built from the recipe
as `rr fit` builds it, after one warm-up step, at the recipe's network size and a small batch) and over one
validation batch (divided by the evaluation segments it ran); then the same counts for one training step of the
public reference TRM code (model, ACT loss, both optimisers, EMA and the metric read-back of its `train_batch`) on the
same configuration. The reference is never vendored: fetch it into a scratch folder and pass `--reference PATH`.
`--throughput` times rr against the reference instead (example-segments/s, configurations interleaved, medians).
Recipes are counted eager (`model.network.compile` off, as the reference), "kernel ops" leave out the view, metadata
and allocation ops (`dispatch_counts.METADATA_OPS`: no kernel launch on any device). `--phases` also splits each
training step by phase (methods of the module, strategy, optimisers, scheduler, logger connector and callbacks wrapped
at runtime; the unwrapped rest is the Lightning loop) and its forward by module class, rr beside the reference, and
lists per phase the ops rr runs more. `--ddp` instead counts the collectives of a training step on each of 2 gloo DDP
ranks on the CPU (one subprocess per recipe), before, during (DDP's gradient reduction) and after the backward.

    python benchmarks/hot_path.py --recipes demo_sudoku trm_sudoku --batch 8 --reference /tmp/ref_trm
    python benchmarks/hot_path.py --recipes demo_sudoku trm_sudoku --batch 4 --precision 32-true \
        --reference /tmp/ref_trm --reference-recipes demo_sudoku trm_sudoku --phases
    python benchmarks/hot_path.py --ddp --recipes demo_sudoku trm_sudoku hrm_sudoku --batch 4 --precision 32-true
    python benchmarks/hot_path.py --throughput --reference /tmp/ref_trm --batch 32 --repeats 3

The reference imports einops and pydantic (`pip install --target /tmp/ref_deps einops pydantic`, then
`PYTHONPATH=/tmp/ref_deps`); its optimiser package `adam_atan2` is a CUDA extension, so this process (only) installs
a stand-in module of that name: the same update rule in `torch._foreach_*` ops, counted as one fused op per
parameter group, which is what the CUDA kernel launches.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import math
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.utils._python_dispatch import _disable_current_modes

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.throughput import Spec, build, chunks, synthetic_batch, task_shape, train_segments  # noqa: E402
from datamodules.base import PuzzleDataModule  # noqa: E402
from recursive_reasoning.cli import ReasoningCLI  # noqa: E402
from recursive_reasoning.dispatch_counts import (  # noqa: E402
    METADATA_OPS, Counts, OpCounter, TrainingStepCounter, op_base_name,
)
from recursive_reasoning.module import RecursiveReasoner  # noqa: E402
from strategies import TRM, Progress, RecursionStrategy  # noqa: E402

SHARED = ROOT.parent / "shared"  # the project's shared/ folder beside the checkout (tests/conftest.py)
STAND_IN_OP = "adam_atan2 fused kernel (stand-in)"


def collectives(counts: Counts) -> Counter:
    """The collective ops of a window by name."""
    return Counter({name: n for name, n in counts.by_op.items() if name.startswith(("c10d", "_c10d_functional"))})


def per_segment(counts: Counts, segments: int) -> dict[str, float]:
    """A window's totals divided by the evaluation segments it ran."""
    return {"ops": counts.ops / segments, "kernel_ops": counts.kernel_ops / segments, "syncs": counts.syncs / segments,
            "uploads": counts.scalar_uploads / segments, "collectives": counts.collectives / segments}


class EvaluationCounter(Callback):
    """Counts the first validation batch after training started (`counts`), and the reasoning steps it ran
    (`segments`: evaluation segments; RSM: outer steps)."""

    def __init__(self) -> None:
        self.counts: Counts | None = None
        self.segments = 0
        self._counter: OpCounter | None = None

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if self.counts is None and self._counter is None and not trainer.sanity_checking:
            self._counter = OpCounter().__enter__()

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.counts, self._counter = self._counter.counts, None


@contextlib.contextmanager
def segments_counted(windows: EvaluationCounter) -> Iterator[None]:
    """Count the reasoning steps (evaluation segments; RSM: outer steps) every strategy class yields."""
    classes = {cls for cls in _subclasses(RecursionStrategy) if "reasoning_steps" in vars(cls)}
    originals = {cls: vars(cls)["reasoning_steps"] for cls in classes}

    def wrap(original: Callable) -> Callable:
        def reasoning_steps(self: RecursionStrategy, *args: Any, **kwargs: Any) -> Iterator[Any]:
            for step in original(self, *args, **kwargs):
                if windows._counter is not None:  # inside the counted validation batch
                    windows.segments += 1
                yield step
        return reasoning_steps

    for cls, original in originals.items():
        setattr(cls, "reasoning_steps", wrap(original))
    try:
        yield
    finally:
        for cls, original in originals.items():
            setattr(cls, "reasoning_steps", original)


def _subclasses(cls: type) -> set[type]:
    found = {cls}
    for sub in cls.__subclasses__():
        found |= _subclasses(sub)
    return found


# --- phases: where a step's ops go ---------------------------------------------------------------------------------

LOOP = "Lightning loop (rest)"  # ops under no phase scope: the loop, data fetching, callbacks' glue
CARRY = "forward: carry + halting"
PHASES = ("batch to device", "forward: segment", CARRY, "loss", "metrics", "training_step glue", "backward",
          "gradient clipping", "optimiser: AdamATan2 (dense)", "optimiser: SignSGD (puzzle table)",
          "optimiser: bundle glue", "zero_grad", "lr scheduler", "EMA", "logging", LOOP)


@contextlib.contextmanager
def phase_of(counter: OpCounter, obj: Any, method: str, label: str, closure_label: str | None = None,
             kind: str = "phase") -> Iterator[None]:
    """While open, `obj.method(...)` runs inside `counter.scope(kind, label)` (an instance attribute over the bound
    method, removed at the end); with `closure_label`, a `closure` argument (Lightning's training step + backward,
    which `optimizer.step` runs) runs under that label instead."""
    original = getattr(obj, method)
    shadowed = method in vars(obj)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if closure_label is not None and kwargs.get("closure") is not None:
            closure = kwargs["closure"]
            kwargs["closure"] = lambda: _scoped(counter, kind, closure_label, closure)
        with counter.scope(kind, label):
            return original(*args, **kwargs)

    setattr(obj, method, wrapped)
    try:
        yield
    finally:
        if shadowed:
            setattr(obj, method, original)
        else:
            delattr(obj, method)


def _scoped(counter: OpCounter, kind: str, label: str, fn: Callable[[], Any]) -> Any:
    with counter.scope(kind, label):
        return fn()


@contextlib.contextmanager
def module_scopes(counter: OpCounter) -> Iterator[None]:
    """Attribute forward ops to the innermost `nn.Module` class running them (scope kind "module"); calls are
    counted per class. Backward ops run outside any module's forward and are not attributed."""
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    pre = register_module_forward_pre_hook(lambda module, args: counter.enter("module", type(module).__name__))
    post = register_module_forward_hook(lambda module, args, out: counter.exit("module"), always_call=True)
    try:
        yield
    finally:
        pre.remove()
        post.remove()


def _overridden_hooks(callback: Callback) -> list[str]:
    """The `Callback` hooks a callback's class overrides."""
    return [name for name in dir(Callback) if name.startswith(("on_", "setup", "teardown", "state_dict"))
            and getattr(type(callback), name, None) is not getattr(Callback, name)]


def rr_phase_hooks(counter: OpCounter, trainer: Trainer, module: RecursiveReasoner,
                   skip: Callback) -> contextlib.ExitStack:
    """Phase scopes over one rr training step, by wrapping (at runtime) the methods each phase runs: the strategy's
    segment, carry and loss methods, the module's metric, logging, backward and clipping hooks, each optimiser's
    step, zero_grad, the scheduler, the logger connector and every callback's hooks (the EMA's as "EMA")."""
    stack = contextlib.ExitStack()
    strategy, bundle = module.strategy, trainer.optimizers[0]
    wraps: list[tuple[Any, str, str]] = [
        (trainer.strategy, "batch_to_device", "batch to device"),
        (module, "training_step", "training_step glue"),
        (strategy, "run_segment", "forward: segment"),
        (strategy, "initial_carry", CARRY), (strategy, "refresh", CARRY), (strategy, "advance", CARRY),
        (strategy, "loss", "loss"),
        (module._train_sums, "add", "metrics"),
        (module, "_log_training_sums", "logging"), (module, "_log_host_numbers", "logging"), (module, "log", "logging"),
        (trainer._logger_connector, "update_train_step_metrics", "logging"),
        (module, "backward", "backward"),
        (module, "configure_gradient_clipping", "gradient clipping"),
        (bundle, "zero_grad", "zero_grad"),
    ]
    for member in getattr(bundle, "optimizers", []):
        name = type(member).__name__
        label = "optimiser: SignSGD (puzzle table)" if name == "SignSGD" else f"optimiser: {name} (dense)"
        wraps.append((member, "step", label))
    for config in trainer.lr_scheduler_configs:
        wraps.append((config.scheduler, "step", "lr scheduler"))
    for callback in trainer.callbacks:
        if callback is not skip:
            label = "EMA" if type(callback).__name__ == "EMA" else f"callback: {type(callback).__name__}"
            wraps += [(callback, hook, label) for hook in _overridden_hooks(callback)]
    for obj, method, label in wraps:
        stack.enter_context(phase_of(counter, obj, method, label))
    stack.enter_context(phase_of(counter, bundle, "step", "optimiser: bundle glue", closure_label=LOOP))
    stack.enter_context(module_scopes(counter))
    return stack


class PhasedStepCounter(TrainingStepCounter):
    """`TrainingStepCounter` that also splits the step by phase (`counts.scopes["phase"]`) and its forward ops by
    module class (`counts.scopes["module"]`)."""

    def __init__(self, step: int) -> None:
        super().__init__(step)
        self._hooks: contextlib.ExitStack | None = None

    def _start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super()._start(trainer, pl_module)
        self._hooks = rr_phase_hooks(self._counter, trainer, pl_module, skip=self)

    def _stop(self) -> None:
        if self._hooks is not None:
            self._hooks.close()
            self._hooks = None
        super()._stop()


# --- rr: one Trainer.fit step of a recipe --------------------------------------------------------------------------


def recipe_path(name: str) -> Path:
    """configs/<name>.yaml, or a path."""
    path = Path(name)
    if not path.exists():
        path = ROOT / "configs" / f"{name.removesuffix('.yaml')}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no recipe {name!r}: a configs/ stem or a YAML path")
    return path


def fit_arguments(recipe: Path, batch: int, root: Path, shared: Path, precision: str | None = None) -> list[str]:
    """`rr fit` arguments that train 3 steps of `recipe` at `batch` on the CPU and validate one batch after them:
    data from `shared`/data, loaded in one worker process as in a real run (its ops are not the step's), logs under
    `root`, eager (see `eager`). A Sudoku recipe whose Sudoku-Extreme files are absent gets generated 9x9 Sudokus: the
    same shapes."""
    config = yaml.safe_load(recipe.read_text())
    data = config.get("data") or {}
    data_args = data.get("init_args") or {}
    data_dir = data_args.get("data_dir")
    if data_dir and not Path(data_dir).is_absolute():
        data_args["data_dir"] = str(shared / data_dir)
    if str(data.get("class_path", "")).endswith(".Sudoku") and not any(
            Path(data_args.get("data_dir", "")).glob("test.csv*")):
        config["data"] = {"class_path": "datamodules.GeneratedSudoku",
                          "init_args": {"size": 9, "train_size": 8 * batch, "val_size": batch, "test_size": batch}}
    eager(config, precision)
    path = root / recipe.name
    path.write_text(yaml.safe_dump(config))
    args = ["--config", str(path), "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.max_steps=3",
            "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={root}",
            f"--data.init_args.batch_size={batch}", f"--data.init_args.eval_batch_size={batch}",
            "--data.init_args.num_workers=1"]
    if precision:
        args.append(f"--trainer.precision={precision}")
    return args


def eager(config: dict[str, Any], precision: str | None) -> None:
    """Count the recipe eager (`model.network.compile` off), as the reference rows are: a dispatch mode sees each op
    of eager code, not the fused kernels of a compiled graph (and on a CPU inductor cannot compile the puzzle
    embedding's sparse gradient). Under a non-bf16 `precision` the recursion states are float32 too."""
    network = (config.get("model") or {}).get("network")
    if network is None:
        return
    network["compile"] = False
    if precision is not None and not precision.startswith("bf16"):
        network["forward_dtype"] = "float32"


def rr_counts(recipe: Path, batch: int, shared: Path, precision: str | None = None, phases: bool = False,
              extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Counts of one `Trainer.fit` training step (after a warm-up step) and per evaluation segment of a recipe; with
    `phases`, the step split by phase and its forward by module class; `extra`: more `rr fit` arguments."""
    train = PhasedStepCounter(step=1) if phases else TrainingStepCounter(step=1)
    evaluation = EvaluationCounter()
    with tempfile.TemporaryDirectory() as root:
        cli = ReasoningCLI(RecursiveReasoner, PuzzleDataModule, subclass_mode_data=True, run=False,
                           args=fit_arguments(recipe, batch, Path(root), shared, precision) + list(extra),
                           save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)
        cli.trainer.callbacks.insert(0, train)  # first: the other callbacks' hooks of the step are in its window
        cli.trainer.callbacks.append(evaluation)
        with segments_counted(evaluation):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if train.counts is None or evaluation.counts is None:
        raise RuntimeError(f"{recipe.stem}: the step or the validation batch was never counted (did fit stop early?)")
    return {"train": train.counts, "evaluation": evaluation.counts, "segments": max(evaluation.segments, 1),
            "precision": str(cli.trainer.precision), "parameters": cli.model.net.num_parameters()}


# --- DDP: the collectives of a training step under 2-process gloo DDP -----------------------------------------------

WINDOWS = ("before backward", "backward (DDP gradient reduction)", "after backward")


class WindowedStepCounter(PhasedStepCounter):
    """`PhasedStepCounter` that also splits the step in time around Lightning's backward (`counts.scopes["window"]`:
    `WINDOWS`), so that DDP's gradient reduction is told from the collectives before and after it."""

    def _start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super()._start(trainer, pl_module)
        counter = self._counter
        counter.enter("window", WINDOWS[0])
        backward = pl_module.backward  # the phase wrapper: its scope stays inside this window's

        def windowed(*args: Any, **kwargs: Any) -> Any:
            counter.exit("window")
            counter.enter("window", WINDOWS[1])
            try:
                return backward(*args, **kwargs)
            finally:
                counter.exit("window")
                counter.enter("window", WINDOWS[2])

        self._hooks.callback(setattr, pl_module, "backward", backward)
        pl_module.backward = windowed


def collective_summary(counts: Counts) -> dict[str, Any]:
    """A step's collectives, by time window and by phase, as plain data (what a DDP rank hands back)."""
    def named(c: Counts) -> dict[str, int]:
        return dict(collectives(c))

    phases = _phase_counts({"train": counts})
    return {"total": named(counts),
            "windows": {label: named(c) for label, c in counts.scopes.get("window", {}).items()},
            "phases": {label: named(c) for label, c in phases.items() if collectives(c)}}


def ddp_worker(recipe: Path, batch: int, shared: Path, precision: str | None, out: Path) -> None:
    """One recipe under `--trainer.devices=2 --trainer.strategy=ddp` (gloo on the CPU; Lightning starts rank 1 by
    running this command again): each rank writes its step's `collective_summary` to `out`/rank{r}.json. It counts
    the third step, a steady one: at the second, DDP rebuilds its gradient buckets once (2 broadcasts of their
    order)."""
    import json
    import os

    train = WindowedStepCounter(step=2)
    with tempfile.TemporaryDirectory() as root:
        cli = ReasoningCLI(RecursiveReasoner, PuzzleDataModule, subclass_mode_data=True, run=False,
                           args=fit_arguments(recipe, batch, Path(root), shared, precision)
                           + ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.limit_val_batches=0",
                              "--trainer.max_steps=4"],
                           save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)
        cli.trainer.callbacks.insert(0, train)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if train.counts is None:
        raise RuntimeError(f"{recipe.stem}: the DDP training step was never counted")
    rank = int(os.environ.get("LOCAL_RANK", cli.trainer.global_rank))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(collective_summary(train.counts)))


def ddp_counts(recipe: Path, batch: int, shared: Path, precision: str | None) -> list[dict[str, Any]]:
    """Each DDP rank's step collectives for `recipe` (`ddp_worker` in a fresh process: one fit, one process group)."""
    import json

    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, str(Path(__file__).resolve()), "--ddp-worker", str(recipe), "--batch", str(batch),
                   "--shared", str(shared), "--ddp-out", out] + (["--precision", precision] if precision else [])
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{recipe.stem}: the DDP run failed: {done.stderr.strip().splitlines()[-1:]}")
        return [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(2)]


def ddp_table(rows: list[tuple[str, list[dict[str, Any]] | str]]) -> str:
    """Markdown: per recipe and rank, the step's collectives before, during and after the backward."""
    def cell(named: dict[str, int]) -> str:
        return f"{sum(named.values())} ({', '.join(f'{k} {n}' for k, n in sorted(named.items())) or '-'})"

    lines = ["| recipe | rank | " + " | ".join(WINDOWS) + " | by phase |", "| --- | --- | --- | --- | --- | --- |"]
    for recipe, ranks in rows:
        if isinstance(ranks, str):
            lines.append(f"| {recipe} | - | error: {ranks} | | | |")
            continue
        for rank, summary in enumerate(ranks):
            phases = "; ".join(f"{label}: {cell(named)}" for label, named in summary["phases"].items()) or "-"
            lines.append(f"| {recipe} | {rank} | " + " | ".join(cell(summary["windows"].get(w, {})) for w in WINDOWS)
                         + f" | {phases} |")
    return "\n".join(lines)


# --- the reference TRM code ----------------------------------------------------------------------------------------


class _FusedAdamATan2(torch.optim.Optimizer):
    """Stand-in for the CUDA-only `adam_atan2.AdamATan2` (the rule of `recursive_reasoning.optim.AdamATan2`): Adam
    with atan2 in place of the epsilon division and decoupled weight decay, in `torch._foreach_*` ops; under
    `counter`, counted as one op per parameter group."""

    counter: OpCounter | None = None

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            with _disable_current_modes():
                self._group_step(group)
            if self.counter is not None:
                self.counter.add_op(STAND_IN_OP)

    def _group_step(self, group: dict[str, Any]) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        grads = [p.grad for p in params]
        for p in params:
            if not self.state[p]:
                self.state[p] = {"step": 0, "m": torch.zeros_like(p), "v": torch.zeros_like(p)}
        states = [self.state[p] for p in params]
        for s in states:
            s["step"] += 1
        step = states[0]["step"]
        beta1, beta2 = group["betas"]
        lr, wd = group["lr"], group["weight_decay"]
        m, v = [s["m"] for s in states], [s["v"] for s in states]
        torch._foreach_mul_(params, 1 - lr * wd)
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(v)  # p <- p - lr / (1 - b1^t) * atan2(m, sqrt(v / (1 - b2^t)))
        torch._foreach_div_(denom, math.sqrt(1 - beta2**step))
        update = [torch.atan2(a, b) for a, b in zip(m, denom)]
        torch._foreach_add_(params, update, alpha=-lr / (1 - beta1**step))


def import_reference(path: Path) -> types.SimpleNamespace:
    """The reference's model, loss head, sparse-embedding optimiser and EMA from a checkout at `path` (this process
    only gets a stand-in `adam_atan2` module: the real one is a CUDA extension)."""
    if not (path / "models" / "recursive_reasoning" / "trm.py").exists():
        raise FileNotFoundError(f"{path} is not a TinyRecursiveModels checkout: fetch "
                                "SamsungSAILMontreal/TinyRecursiveModels and pass its folder as --reference")
    stand_in = types.ModuleType("adam_atan2")
    stand_in.AdamATan2 = _FusedAdamATan2
    sys.modules.setdefault("adam_atan2", stand_in)
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    try:
        trm = importlib.import_module("models.recursive_reasoning.trm")
    except ModuleNotFoundError as error:
        raise SystemExit(f"the reference code needs {error.name}: `pip install --target /tmp/ref_deps einops "
                         "pydantic` and run with PYTHONPATH=/tmp/ref_deps") from error
    return types.SimpleNamespace(
        model=trm.TinyRecursiveReasoningModel_ACTV1,
        loss=importlib.import_module("models.losses").ACTLossHead,
        sign_sgd=importlib.import_module("models.sparse_embedding").CastedSparseEmbeddingSignSGD_Distributed,
        ema=importlib.import_module("models.ema").EMAHelper,
    )


@dataclass
class ReferenceRun:
    """One reference training setup: the loss-wrapped model, its optimisers and base lrs, EMA, batch and carry."""

    model: torch.nn.Module
    optimizers: list[tuple[torch.optim.Optimizer, float]]
    ema: Any
    batch: int
    carry: Any = None

    def step(self, batches: list[dict[str, torch.Tensor]], counter: OpCounter | None = None) -> None:
        """What the reference's `train_batch` does per optimiser step (no compile, one process): forward and backward
        of each micro-batch, both optimisers at their lr, the EMA update, and the metrics stacked and read back."""
        _FusedAdamATan2.counter = counter

        def phase(label: str) -> contextlib.AbstractContextManager:
            return counter.scope("phase", label) if counter is not None else contextlib.nullcontext()

        metrics: dict[str, torch.Tensor] = {}
        for part in batches:
            if self.carry is None:
                with phase(CARRY):
                    self.carry = self.model.initial_carry(part)
            self.carry, loss, metrics, _, _ = self.model(carry=self.carry, batch=part, return_keys=[])
            with phase("backward"):
                ((1 / self.batch) * loss).backward()
        for optimizer, lr in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
            dense = isinstance(optimizer, _FusedAdamATan2)
            with phase("optimiser: AdamATan2 (dense)" if dense else "optimiser: SignSGD (puzzle table)"):
                optimizer.step()
            with phase("zero_grad"):
                optimizer.zero_grad()
        if self.ema is not None:
            with phase("EMA"):
                self.ema.update(self.model)
        with phase("logging"):
            torch.stack([metrics[k] for k in sorted(metrics)]).cpu().numpy()


def reference_config(recipe: Path, batch: int, precision: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The reference TRM's architecture config for an rr TRM recipe (and the recipe's optimiser options)."""
    config = yaml.safe_load(recipe.read_text())
    model = config["model"]
    strategy = RecursionStrategy.from_hparams(model["strategy"])
    if type(strategy) is not TRM:
        raise ValueError(f"{recipe.stem} is not a TRM recipe: the reference counts cover TRM recipes only")
    net = model.get("network") or {}
    vocab, length = task_shape(config.get("data", {}))
    emb_len = int(net.get("puzzle_emb_len", 16))
    hidden = int(net.get("hidden_size", 512))
    arch = dict(
        batch_size=batch, seq_len=length, vocab_size=vocab, num_puzzle_identifiers=1, causal=False,
        H_cycles=strategy.cycles, L_cycles=strategy.latent_steps, H_layers=0, L_layers=int(net.get("num_layers", 2)),
        hidden_size=hidden, num_heads=int(net.get("num_heads", 8)), expansion=float(net.get("expansion", 4.0)),
        puzzle_emb_ndim=hidden if emb_len else 0, puzzle_emb_len=emb_len,
        pos_encodings="rope" if net.get("positions", "rope") == "rope" else "learned" if net.get("positions") ==
        "learned" else "none", mlp_t=net.get("mixer", "attention") == "mlp",
        halt_max_steps=strategy.supervision_steps, halt_exploration_prob=strategy.halt_exploration,
        forward_dtype="bfloat16" if precision.startswith("bf16") else "float32", no_ACT_continue=True,
    )
    return arch, dict(model.get("optim") or {}), config


def reference_setup(ref: types.SimpleNamespace, recipe: Path, batch: int, precision: str, seed: int = 0) -> tuple[
        ReferenceRun, int, int]:
    """The reference model + loss + optimisers + EMA for `recipe` at `batch`; also (vocab, seq_len)."""
    arch, optim, config = reference_config(recipe, batch, precision)
    torch.manual_seed(seed)
    strategy = RecursionStrategy.from_hparams(config["model"]["strategy"])  # its default loss_type included
    loss_type = f"{strategy.loss_type}_cross_entropy"
    model = ref.loss(ref.model(arch), loss_type=loss_type)
    if loss_type == "softmax_cross_entropy":  # the reference's softmax loss lacks the valid_mask its ACT head passes
        softmax = model.loss_fn
        model.loss_fn = lambda logits, labels, ignore_index, valid_mask: softmax(logits, labels, ignore_index)
    betas = tuple(optim.get("betas", (0.9, 0.95)))
    adam = _FusedAdamATan2(model.parameters(), lr=0.0, weight_decay=float(optim.get("weight_decay", 0.1)),
                           betas=betas)
    optimizers = [(adam, float(optim.get("lr", 1e-4)))]
    if arch["puzzle_emb_ndim"]:
        sign = ref.sign_sgd(model.model.puzzle_emb.buffers(), lr=0.0, world_size=1,
                            weight_decay=float(optim.get("puzzle_emb_weight_decay", 0.1)))
        optimizers.insert(0, (sign, float(optim.get("puzzle_emb_lr", 1e-2))))
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    ema = None
    for callback in callbacks:
        if str(callback.get("class_path", "")).endswith(".EMA"):
            ema = ref.ema(mu=float((callback.get("init_args") or {}).get("decay", 0.999)))
            ema.register(model)
    return ReferenceRun(model.train(), optimizers, ema, batch), arch["vocab_size"], arch["seq_len"]


def reference_phase_hooks(counter: OpCounter, run: ReferenceRun) -> contextlib.ExitStack:
    """Phase scopes over the reference step's model call, as `rr_phase_hooks` splits rr's: the loss head (the
    halt losses and the metrics: "metrics"), its `loss_fn` and the halting BCE ("loss"), the ACT wrapper (carry
    reset and halting) and the inner model's segment; forward ops by module class as for rr."""
    stack = contextlib.ExitStack()
    act = run.model.model
    for obj, method, label in [(run.model, "forward", "metrics"), (run.model, "loss_fn", "loss"),
                               (torch.nn.functional, "binary_cross_entropy_with_logits", "loss"),
                               (act, "forward", CARRY), (act.inner, "forward", "forward: segment")]:
        stack.enter_context(phase_of(counter, obj, method, label))
    stack.enter_context(module_scopes(counter))
    return stack


def reference_batch(vocab: int, length: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"inputs": torch.randint(1, vocab, (size, length), generator=g),
            "labels": torch.randint(1, vocab, (size, length), generator=g),
            "puzzle_identifiers": torch.zeros(size, dtype=torch.int32)}


def reference_counts(ref: types.SimpleNamespace, recipe: Path, batch: int, precision: str) -> dict[str, Any]:
    """Counts of one reference training step (after a warm-up step) and of one evaluation segment (a forward in
    eval mode and the `all_finish` check its evaluation loop makes per segment)."""
    run, vocab, length = reference_setup(ref, recipe, batch, precision)
    data = reference_batch(vocab, length, batch)
    run.step([data])
    with OpCounter() as counter, reference_phase_hooks(counter, run):
        run.step([data], counter)
    train = counter.counts
    run.model.eval()
    with torch.inference_mode():
        carry = run.model.initial_carry(data)
        carry, *_ = run.model(carry=carry, batch=data, return_keys=[])
        with OpCounter() as counter:
            carry, _, _, _, finished = run.model(carry=carry, batch=data, return_keys=[])
            bool(finished)
    return {"train": train, "evaluation": counter.counts, "segments": 1, "precision": precision,
            "parameters": sum(p.numel() for p in run.model.parameters())}


# --- the table -----------------------------------------------------------------------------------------------------


def sync_detail(counts: Counts) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.sync_ops.items())) or "-"


def table(rows: list[tuple[str, str, dict[str, Any]]]) -> str:
    """Markdown: one row per (recipe, code)."""
    lines = ["| recipe | code | precision | train ops/step | train kernel ops/step | train syncs/step (where) | "
             "uploads/step | collectives/step | eval ops/segment | eval kernel ops/segment | eval syncs/segment | "
             "eval uploads/segment |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for recipe, code, result in rows:
        if "error" in result:
            lines.append(f"| {recipe} | {code} | error: {result['error']} | | | | | | | | | |")
            continue
        train, segments = result["train"], result["segments"]
        evaluation = per_segment(result["evaluation"], segments)
        lines.append(
            f"| {recipe} | {code} | {result['precision']} | {train.ops:,} | {train.kernel_ops:,} | {train.syncs} "
            f"({sync_detail(train)}) | {train.scalar_uploads} | {train.collectives} "
            f"({', '.join(f'{k} {n}' for k, n in sorted(collectives(train).items())) or '-'}) | "
            f"{evaluation['ops']:,.0f} | {evaluation['kernel_ops']:,.0f} | {evaluation['syncs']:.2f} | "
            f"{evaluation['uploads']:.2f} |"
        )
    return "\n".join(lines)


def _phase_counts(result: dict[str, Any], kind: str = "phase") -> dict[str, Counts]:
    """A result's step counts by scope label; for phases, the unscoped rest as `LOOP`."""
    train: Counts = result["train"]
    scoped = dict(train.scopes.get(kind, {}))
    if kind == "phase":
        rest = Counts(ops=train.ops - sum(c.ops for c in scoped.values()),
                      syncs=train.syncs - sum(c.syncs for c in scoped.values()),
                      scalar_uploads=train.scalar_uploads - sum(c.scalar_uploads for c in scoped.values()),
                      collectives=train.collectives - sum(c.collectives for c in scoped.values()),
                      by_op=train.by_op - sum((c.by_op for c in scoped.values()), Counter()),
                      sync_ops=train.sync_ops - sum((c.sync_ops for c in scoped.values()), Counter()))
        scoped[LOOP] = _merged(scoped.get(LOOP), rest)
    return scoped


def _merged(first: Counts | None, second: Counts) -> Counts:
    if first is None:
        return second
    return Counts(first.ops + second.ops, first.syncs + second.syncs, first.scalar_uploads + second.scalar_uploads,
                  first.collectives + second.collectives, first.by_op + second.by_op,
                  first.sync_ops + second.sync_ops)


def _ordered(labels: set[str]) -> list[str]:
    known = [p for p in PHASES if p in labels and p != LOOP]
    return known + sorted(labels - set(PHASES)) + ([LOOP] if LOOP in labels else [])


def phase_table(recipe: str, results: dict[str, dict[str, Any]]) -> str:
    """Markdown: a recipe's training step by phase, one column group per code (rr, reference)."""
    codes = list(results)
    phases = {code: _phase_counts(result) for code, result in results.items()}
    head = " | ".join(f"{code} ops | {code} kernel ops | {code} syncs | {code} uploads | {code} collectives"
                      for code in codes)
    lines = [f"| {recipe}: phase | {head} |", "| --- |" + " --- |" * (5 * len(codes))]
    labels = _ordered(set().union(*phases.values()))
    for label in labels + ["total"]:
        cells = []
        for code in codes:
            c = results[code]["train"] if label == "total" else phases[code].get(label)
            cells.append(" | ".join(["-"] * 5) if c is None else
                         f"{c.ops:,} | {c.kernel_ops:,} | {c.syncs} | {c.scalar_uploads} | {c.collectives}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def phase_differences(recipe: str, rr: dict[str, Any], reference: dict[str, Any], top: int = 12) -> str:
    """Per phase, the ops rr runs more (or fewer) times than the reference, largest first (view/metadata ops
    marked *)."""
    ours, theirs = _phase_counts(rr), _phase_counts(reference)
    lines = [f"{recipe}: rr - reference by phase (op: difference; * = view, metadata or allocation op: no kernel)"]
    for label in _ordered(set(ours) | set(theirs)):
        a = (ours.get(label) or Counts()).by_op
        b = (theirs.get(label) or Counts()).by_op
        diff = {name: a[name] - b[name] for name in set(a) | set(b) if a[name] != b[name]}
        if not diff:
            continue
        ranked = sorted(diff.items(), key=lambda item: (-abs(item[1]), item[0]))[:top]
        total = sum(a.values()) - sum(b.values())
        lines.append(f"  {label} ({total:+,}): " + ", ".join(
            f"{_short(name)}{'*' if op_base_name(name) in METADATA_OPS else ''} {n:+d}" for name, n in ranked))
    return "\n".join(lines)


def _short(name: str) -> str:
    return name.removeprefix("aten.").removesuffix(".default")


# the reference's module classes under the names of their rr counterparts, so that both share a row
REFERENCE_MODULES = {"CastedLinear": "CastLinear", "CastedEmbedding": "Embedding",
                     "TinyRecursiveReasoningModel_ACTV1Block": "Block",
                     "TinyRecursiveReasoningModel_ACTV1ReasoningModule": "ReasoningModule",
                     "TinyRecursiveReasoningModel_ACTV1_Inner": "ReasoningNetwork / _Inner",
                     "TinyRecursiveReasoningModel_ACTV1": "ACT wrapper (reference)", "ACTLossHead": "ACTLossHead"}


def _module_counts(result: dict[str, Any]) -> tuple[dict[str, Counts], Counter]:
    """A result's forward counts and calls by module class, the reference's classes under their rr names."""
    scoped: dict[str, Counts] = {}
    calls: Counter = Counter()
    for label, c in result["train"].scopes.get("module", {}).items():
        name = REFERENCE_MODULES.get(label, label)
        scoped[name] = _merged(scoped.get(name), c)
    for label, n in result["train"].calls.get("module", Counter()).items():
        calls[REFERENCE_MODULES.get(label, label)] += n
    return scoped, calls


def module_table(recipe: str, results: dict[str, dict[str, Any]]) -> str:
    """Markdown: forward ops by innermost module class, per call (ops and kernel ops), one column group per code."""
    codes = list(results)
    scoped, calls = {}, {}
    for code, result in results.items():
        scoped[code], calls[code] = _module_counts(result)
    head = " | ".join(f"{code} calls | {code} ops/call | {code} kernel ops/call | {code} top ops/call"
                      for code in codes)
    lines = [f"| {recipe}: module (own ops) | {head} |", "| --- |" + " --- |" * (4 * len(codes))]
    for label in sorted(set().union(*scoped.values())):
        cells = []
        for code in codes:
            c, n = scoped[code].get(label), calls[code][label]
            if c is None or not n:
                cells.append("- | - | - | -")
                continue
            top = ", ".join(f"{_short(name)} {k / n:g}" for name, k in c.by_op.most_common(6))
            cells.append(f"{n} | {c.ops / n:g} | {c.kernel_ops / n:g} | {top}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    """The CPU model (lscpu), torch's version and threads."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
        model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name")), "")
    except (OSError, subprocess.CalledProcessError):
        model = platform.processor()
    return f"{model or 'unknown CPU'}, torch {torch.__version__}, {torch.get_num_threads()} threads"


# --- throughput: rr against the reference, interleaved -------------------------------------------------------------


def throughput(ref: types.SimpleNamespace, recipe: Path, batch: int, micro_batch: int, repeats: int, steps: int,
               precision: str) -> dict[str, Any]:
    """Example-segments/s of rr (`benchmarks/throughput.py`'s training segment) and of the reference (`ReferenceRun`)
    at `batch` (in micro-batches of `micro_batch`), timed alternately (ABAB...) so drift hits both; medians."""
    rr_precision = "bf16" if precision.startswith("bf16") else "fp32"
    spec = Spec(recipe.stem, batch, precision=rr_precision, micro_batch=micro_batch, steps=steps)
    recipe_rr, model = build(spec, torch.device("cpu"))
    optimizer = model.configure_optimizers()["optimizer"]
    data_rr = synthetic_batch(recipe_rr, batch, torch.device("cpu"))
    progress = Progress(1000, 1000)
    run, vocab, length = reference_setup(ref, recipe, micro_batch, precision)
    data_ref = chunks(reference_batch(vocab, length, batch), micro_batch)
    run.batch = batch
    _, carries, _ = train_segments(model, optimizer, recipe_rr, data_rr, spec, torch.device("cpu"), progress, 1, None)
    run.step(data_ref)  # warm-up: both
    rr_rates, ref_rates = [], []
    for _ in range(repeats):
        seconds, carries, _ = train_segments(model, optimizer, recipe_rr, data_rr, spec, torch.device("cpu"), progress,
                                             steps, carries)
        rr_rates.append(batch * steps / seconds)
        start = time.perf_counter()
        for _ in range(steps):
            run.step(data_ref)
        ref_rates.append(batch * steps / (time.perf_counter() - start))
    rr_median, ref_median = statistics.median(rr_rates), statistics.median(ref_rates)
    return {"rr": rr_rates, "reference": ref_rates, "rr_median": rr_median, "reference_median": ref_median,
            "ratio": rr_median / ref_median}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=None, help="configs/ stems (default: every recipe)")
    parser.add_argument("--batch", type=int, default=8, help="training and evaluation batch (counts: a small one)")
    parser.add_argument("--precision", default=None, help="override the recipes' trainer.precision (e.g. 32-true)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared/ folder holding data/")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a TinyRecursiveModels checkout: also count (or time) its TRM on the TRM recipes")
    parser.add_argument("--reference-recipes", nargs="+", default=["demo_sudoku", "trm_sudoku"])
    parser.add_argument("--top", type=int, default=0, help="also print each training step's N most frequent ops")
    parser.add_argument("--phases", action="store_true",
                        help="also split each training step by phase (forward, loss, backward, optimisers, EMA, "
                             "logging, callbacks, the Lightning loop) and its forward by module class, rr beside "
                             "the reference, with the ops rr runs more per phase")
    parser.add_argument("--ddp", action="store_true",
                        help="count the collectives of a training step under 2-process gloo DDP on the CPU instead, "
                             "split into before / during (DDP's gradient reduction) / after the backward")
    parser.add_argument("--throughput", action="store_true", help="time rr against --reference instead of counting")
    parser.add_argument("--micro-batch", type=int, default=None, help="--throughput: micro-batch (default: --batch)")
    parser.add_argument("--repeats", type=int, default=3, help="--throughput: interleaved timings per code")
    parser.add_argument("--steps", type=int, default=1, help="--throughput: optimiser steps per timing")
    parser.add_argument("--ddp-worker", type=Path, default=None, help=argparse.SUPPRESS)  # one DDP rank's run
    parser.add_argument("--ddp-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker is not None:
        ddp_worker(args.ddp_worker, args.batch, args.shared, args.precision, args.ddp_out)
        return
    print(f"{datetime.date.today()}; {machine()}; counts, not times", flush=True)
    if args.ddp:
        ddp_rows: list[tuple[str, list[dict[str, Any]] | str]] = []
        for name in args.recipes or ["demo_sudoku", "trm_sudoku", "hrm_sudoku", "rsm_sudoku", "cgar_sudoku"]:
            recipe = recipe_path(name)
            try:
                ddp_rows.append((recipe.stem, ddp_counts(recipe, args.batch, args.shared, args.precision)))
            except RuntimeError as error:
                ddp_rows.append((recipe.stem, str(error).splitlines()[0]))
            print(ddp_table(ddp_rows[-1:]).splitlines()[-1], flush=True)
        print()
        print(ddp_table(ddp_rows))
        return

    if args.throughput:
        if args.reference is None:
            raise SystemExit("--throughput compares rr with the reference: pass --reference PATH")
        ref = import_reference(args.reference)
        for name in args.recipes or ["trm_sudoku"]:
            recipe = recipe_path(name)
            precision = args.precision or "32-true"
            result = throughput(ref, recipe, args.batch, args.micro_batch or args.batch, args.repeats, args.steps,
                                precision)
            print(f"| {recipe.stem} | {args.batch} | {args.micro_batch or args.batch} | {precision} | "
                  f"{result['rr_median']:.1f} | {result['reference_median']:.1f} | {result['ratio']:.2f} | "
                  f"{args.repeats} |  rr {[round(r, 1) for r in result['rr']]}, reference "
                  f"{[round(r, 1) for r in result['reference']]}", flush=True)
        return

    names = args.recipes or sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    rows: list[tuple[str, str, dict[str, Any]]] = []
    for name in names:
        recipe = recipe_path(name)
        try:
            rows.append((recipe.stem, "rr", rr_counts(recipe, args.batch, args.shared, args.precision,
                                                      phases=args.phases)))
        except (FileNotFoundError, RuntimeError, ValueError) as error:
            rows.append((recipe.stem, "rr", {"error": str(error).splitlines()[0]}))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    if args.reference is not None:
        ref = import_reference(args.reference)
        for name in args.reference_recipes:
            recipe = recipe_path(name)
            precision = args.precision or str(yaml.safe_load(recipe.read_text())["trainer"].get("precision", "32"))
            rows.append((recipe.stem, "reference", reference_counts(ref, recipe, args.batch, precision)))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    for recipe, code, result in rows if args.top else ():
        if "train" in result:
            top = result["train"].by_op.most_common(args.top)
            print(f"{recipe} {code}: " + ", ".join(f"{name} {n}" for name, n in top))
    if args.phases:
        print_phases(rows)


def print_phases(rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    """The phase and module tables of every counted recipe, rr beside the reference where both ran."""
    by_recipe: dict[str, dict[str, dict[str, Any]]] = {}
    for recipe, code, result in rows:
        if "train" in result:
            by_recipe.setdefault(recipe, {})[code] = result
    for recipe, results in by_recipe.items():
        print()
        print(phase_table(recipe, results))
        if {"rr", "reference"} <= set(results):
            print()
            print(phase_differences(recipe, results["rr"], results["reference"]))
        print()
        print(module_table(recipe, results))


if __name__ == "__main__":
    main()
