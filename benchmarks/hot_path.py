"""Aten ops, host-device sync points, scalar uploads and collectives per training step and per evaluation segment.

Counts, not times: a `TorchDispatchMode` over one `Trainer.fit` training step of each recipe (built from the recipe
as `rr fit` builds it, after one warm-up step, at the recipe's network size and a small batch) and over one
validation batch (divided by the evaluation segments it ran); then the same counts for one training step of the
public reference TRM code (model, ACT loss, both optimisers, EMA and the metric read-back of its `train_batch`) on the
same configuration. The reference is never vendored: fetch it into a scratch folder and pass `--reference PATH`.
`--throughput` times rr against the reference instead (example-segments/s, configurations interleaved, medians).

    python benchmarks/hot_path.py --recipes demo_sudoku trm_sudoku --batch 8 --reference /tmp/ref_trm
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
from recursive_reasoning.dispatch_counts import Counts, OpCounter, TrainingStepCounter  # noqa: E402
from recursive_reasoning.module import RecursiveReasoner  # noqa: E402
from strategies import TRM, Progress, RecursionStrategy  # noqa: E402

SHARED = ROOT.parent / "shared"  # the project's shared/ folder beside the checkout (tests/conftest.py)
STAND_IN_OP = "adam_atan2 fused kernel (stand-in)"


def collectives(counts: Counts) -> Counter:
    """The collective ops of a window by name."""
    return Counter({name: n for name, n in counts.by_op.items() if name.startswith(("c10d", "_c10d_functional"))})


def per_segment(counts: Counts, segments: int) -> dict[str, float]:
    """A window's totals divided by the evaluation segments it ran."""
    return {"ops": counts.ops / segments, "syncs": counts.syncs / segments,
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
    `root`. A Sudoku recipe whose Sudoku-Extreme files are absent gets generated 9x9 Sudokus: the same shapes."""
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


def rr_counts(recipe: Path, batch: int, shared: Path, precision: str | None = None) -> dict[str, Any]:
    """Counts of one `Trainer.fit` training step (after a warm-up step) and per evaluation segment of a recipe."""
    train, evaluation = TrainingStepCounter(step=1), EvaluationCounter()
    with tempfile.TemporaryDirectory() as root:
        cli = ReasoningCLI(RecursiveReasoner, PuzzleDataModule, subclass_mode_data=True, run=False,
                           args=fit_arguments(recipe, batch, Path(root), shared, precision),
                           save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)
        cli.trainer.callbacks.insert(0, train)  # first: the other callbacks' hooks of the step are in its window
        cli.trainer.callbacks.append(evaluation)
        with segments_counted(evaluation):
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    if train.counts is None or evaluation.counts is None:
        raise RuntimeError(f"{recipe.stem}: the step or the validation batch was never counted (did fit stop early?)")
    return {"train": train.counts, "evaluation": evaluation.counts, "segments": max(evaluation.segments, 1),
            "precision": str(cli.trainer.precision), "parameters": cli.model.net.num_parameters()}


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
                self.counter.counts.ops += 1
                self.counter.counts.by_op[STAND_IN_OP] += 1

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
        metrics: dict[str, torch.Tensor] = {}
        for part in batches:
            if self.carry is None:
                self.carry = self.model.initial_carry(part)
            self.carry, loss, metrics, _, _ = self.model(carry=self.carry, batch=part, return_keys=[])
            ((1 / self.batch) * loss).backward()
        for optimizer, lr in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad()
        if self.ema is not None:
            self.ema.update(self.model)
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
    loss_type = "stablemax_cross_entropy" if config["model"]["strategy"].get("init_args", {}).get(
        "loss_type") == "stablemax" else "softmax_cross_entropy"
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
    with OpCounter() as counter:
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
    lines = ["| recipe | code | precision | train ops/step | train syncs/step (where) | uploads/step | "
             "collectives/step | eval ops/segment | eval syncs/segment | eval uploads/segment |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for recipe, code, result in rows:
        if "error" in result:
            lines.append(f"| {recipe} | {code} | error: {result['error']} | | | | | | | |")
            continue
        train, segments = result["train"], result["segments"]
        evaluation = per_segment(result["evaluation"], segments)
        lines.append(
            f"| {recipe} | {code} | {result['precision']} | {train.ops:,} | {train.syncs} "
            f"({sync_detail(train)}) | {train.scalar_uploads} | {train.collectives} "
            f"({', '.join(f'{k} {n}' for k, n in sorted(collectives(train).items())) or '-'}) | "
            f"{evaluation['ops']:,.0f} | {evaluation['syncs']:.2f} | {evaluation['uploads']:.2f} |"
        )
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
    parser.add_argument("--throughput", action="store_true", help="time rr against --reference instead of counting")
    parser.add_argument("--micro-batch", type=int, default=None, help="--throughput: micro-batch (default: --batch)")
    parser.add_argument("--repeats", type=int, default=3, help="--throughput: interleaved timings per code")
    parser.add_argument("--steps", type=int, default=1, help="--throughput: optimiser steps per timing")
    args = parser.parse_args(argv)
    print(f"{datetime.date.today()}; {machine()}; counts, not times", flush=True)

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
            rows.append((recipe.stem, "rr", rr_counts(recipe, args.batch, args.shared, args.precision)))
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


if __name__ == "__main__":
    main()
