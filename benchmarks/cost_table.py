"""Training cost of every recipe in configs/: FLOPs per optimiser step and in all, checkpoint size, and an estimate of
the hours on one GPU at a stated model FLOP utilisation (MFU).

FLOPs are the analytic matmul count of `recursive_reasoning/flops.py` (`segment_flops`: forward of every module call and
of the heads, backward 2x forward for the calls with gradient, HRM's continue-target segment): one training step runs
one segment for every example of the batch, so a step costs segment FLOPs x batch, averaged over the steps of a
depth schedule (CGAR's curriculum, RSM's growth; RSM's stochastic penultimate gradient at its expected rate). The
checkpoint size is counted from the objects a run builds: the model's state (parameters, buffers, puzzle-embedding
table), the optimiser states after a step, the EMA copy (when the recipe has the EMA callback; the table is not
averaged) and the saved ACT carry of the whole batch. GPU hours are total FLOPs / (peak x MFU): an estimate until
measured, since the count leaves out the element-wise work, the embedding table and data loading.

    python benchmarks/cost_table.py --data-dir ../shared/data          # ARC recipes need the task files for their ids
    python benchmarks/cost_table.py --recipe demo_sudoku trm_sudoku --mfu 0.2 0.4
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from benchmarks.throughput import load_recipe, synthetic_batch
from recursive_reasoning.flops import call_flops, segment_flops
from recursive_reasoning.module import RecursiveReasoner
from strategies import RSM, Progress

H100_BF16_DENSE = 989e12  # H100 / H200 SXM bf16 dense tensor-core peak, FLOP/s


@dataclass
class Cost:
    """One recipe's training cost."""

    recipe: str
    batch: int
    max_steps: int
    step_flops: float
    total_flops: float
    puzzle_ids: int | None
    weights_bytes: int
    optimizer_bytes: int
    ema_bytes: int
    carry_bytes: int

    @property
    def checkpoint_bytes(self) -> int:
        """Everything a resumable checkpoint holds (the small scalars, RNG states and hyperparameters aside)."""
        return self.weights_bytes + self.optimizer_bytes + self.ema_bytes + self.carry_bytes

    def gpu_hours(self, mfu: float, peak: float = H100_BF16_DENSE) -> float:
        """Hours on one GPU of `peak` FLOP/s at utilisation `mfu`."""
        return self.total_flops / (peak * mfu) / 3600


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a nested dict / list / tuple (storage shared by several entries counted once)."""
    seen: set[int] = set()

    def walk(x: Any) -> int:
        if isinstance(x, torch.Tensor):
            key = x.untyped_storage().data_ptr() if x.numel() else id(x)
            if key in seen:
                return 0
            seen.add(key)
            return x.numel() * x.element_size()
        if isinstance(x, dict):
            return sum(walk(v) for v in x.values())
        if isinstance(x, (list, tuple)):
            return sum(walk(v) for v in x)
        return 0

    return walk(obj)


def mean_step_flops(recipe_name: str, max_steps: int) -> float:
    """Training FLOPs per example per optimiser step, averaged over the steps 0..max_steps-1 of the recipe."""
    recipe = load_recipe(recipe_name)
    model = RecursiveReasoner(recipe.strategy, recipe.network, replace(recipe.optim, lr_min_ratio=1.0),
                              vocab_size=recipe.vocab_size, seq_len=recipe.seq_len)
    strategy, net = model.strategy, model.net
    # steps grouped by their module calls: the FLOPs depend on the progress only through them
    groups: Counter[tuple[int, int]] = Counter()
    first: dict[tuple[int, int], int] = {}
    for k in range(max_steps):
        calls = strategy.module_calls(Progress(k, max_steps), True)
        groups[calls] += 1
        first.setdefault(calls, k)
    total = 0.0
    for calls, count in groups.items():
        progress = Progress(first[calls], max_steps)
        flops = float(segment_flops(net, strategy, progress, True)["total"])
        if isinstance(strategy, RSM) and strategy.p_detach > 0.0:
            # the declared window leaves out the penultimate answer update, which has gradient (one more backward
            # of 2x a call) with probability 1 - p_detach
            flops += (1.0 - strategy.p_detach) * 2 * call_flops(net)
        total += count * flops
    return total / max_steps


def puzzle_ids(data: dict[str, Any], data_dir: str | None) -> int | None:
    """The data module's puzzle-id count (its table's rows); None when its files are missing (ARC without data)."""
    module_name, _, class_name = data["class_path"].rpartition(".")
    args = dict(data.get("init_args") or {})
    if data_dir is not None and "data_dir" in args:
        args["data_dir"] = data_dir
    try:
        return int(getattr(importlib.import_module(module_name), class_name)(**args).num_puzzle_ids)
    except FileNotFoundError:
        return None


def state_bytes(recipe_name: str, ids: int, batch: int, ema: bool) -> tuple[int, int, int, int]:
    """(model state, optimiser states, EMA copy, ACT carry) bytes of a run with `ids` puzzle ids at batch `batch`.

    Built with a table of 1 and of 2 rows: everything that grows with the table grows by their difference per row.
    """
    sizes = []
    for rows in (1, 2):
        recipe = load_recipe(recipe_name)
        model = RecursiveReasoner(recipe.strategy, recipe.network, replace(recipe.optim, lr_min_ratio=1.0),
                                  vocab_size=recipe.vocab_size, seq_len=recipe.seq_len, num_puzzle_ids=rows)
        optimizer = model.configure_optimizers()["optimizer"]
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()  # Adam-style states exist from the first step on
        live = set(model.live_parameter_names())
        averaged = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if n not in live)
        sizes.append((tensor_bytes(model.state_dict()), tensor_bytes(optimizer.state_dict()), averaged if ema else 0))
    per_row = [b - a for a, b in zip(*sizes)]
    weights, optim, averaged = (base + (ids - 1) * grow for base, grow in zip(sizes[0], per_row))
    one = synthetic_batch(recipe, 1, torch.device("cpu"))
    carry = model.strategy.initial_carry(model.net, one)
    saved = [carry.y, carry.z, carry.steps, carry.halted, *carry.batch.values()]  # what `_carry_state` writes
    per_example = sum(t.numel() * t.element_size() for t in saved)
    return weights, optim, averaged, per_example * batch


def cost(recipe_name: str, data_dir: str | None = None) -> Cost:
    """The training cost of configs/<recipe_name>.yaml."""
    config = yaml.safe_load((ROOT / "configs" / f"{recipe_name}.yaml").read_text())
    trainer, data = config["trainer"], config["data"]
    batch, max_steps = int(data["init_args"]["batch_size"]), int(trainer["max_steps"])
    ema = any(str(c.get("class_path", "")).endswith("callbacks.EMA") for c in trainer.get("callbacks") or [])
    ids = puzzle_ids(data, data_dir)
    step = mean_step_flops(recipe_name, max_steps) * batch
    weights, optim, averaged, carry = state_bytes(recipe_name, ids or 1, batch, ema)
    return Cost(recipe_name, batch, max_steps, step, step * max_steps, ids, weights, optim, averaged, carry)


def human(n: float, unit: str = "") -> str:
    """1.23e+18 style for FLOPs, GB / MB for bytes."""
    if unit == "B":
        return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"
    return f"{n:.3g}"


def table(costs: list[Cost], mfus: list[float]) -> str:
    """Markdown table of the costs."""
    header = ["recipe", "batch", "steps", "FLOP / step", "total FLOP", "puzzle ids", "weights", "optimiser",
              "EMA", "ACT carry", "checkpoint", *(f"H100 h at {m:.0%} MFU" for m in mfus)]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for c in costs:
        ids = f"{c.puzzle_ids:,}" if c.puzzle_ids is not None else "table not counted (no data)"
        cells = [c.recipe, str(c.batch), f"{c.max_steps:,}", human(c.step_flops), human(c.total_flops), ids,
                 human(c.weights_bytes, "B"), human(c.optimizer_bytes, "B"),
                 human(c.ema_bytes, "B") if c.ema_bytes else "no EMA",
                 human(c.carry_bytes, "B"), human(c.checkpoint_bytes, "B"),
                 *(f"{c.gpu_hours(m):.2f}" for m in mfus)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", nargs="+", default=sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")),
                        help="configs/<name>.yaml stems (default: all)")
    parser.add_argument("--data-dir", default=None, help="data_dir for the recipes that read task files (ARC)")
    parser.add_argument("--mfu", nargs="+", type=float, default=[0.2, 0.4])
    args = parser.parse_args()
    print(table([cost(name, args.data_dir) for name in args.recipe], args.mfu))


if __name__ == "__main__":
    main()
