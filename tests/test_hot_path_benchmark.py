"""Smoke tests of benchmarks/hot_path.py's counting and of benchmarks/gpu_check.sh's dry run (counts, not times)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.hot_path import (  # noqa: E402
    STAND_IN_OP, _FusedAdamATan2, fit_arguments, per_segment, recipe_path, table,
)
from benchmarks.throughput import COMPILE  # noqa: E402
from recursive_reasoning.dispatch_counts import OpCounter  # noqa: E402


def test_stand_in_optimiser_counts_one_op_per_group_and_updates() -> None:
    first, second = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))
    optimizer = _FusedAdamATan2([{"params": [first]}, {"params": [second]}], lr=0.1, weight_decay=0.0)
    first.grad, second.grad = torch.full((3,), 2.0), torch.full((2, 2), -1.0)
    with OpCounter() as counter:
        _FusedAdamATan2.counter = counter
        optimizer.step()
    _FusedAdamATan2.counter = None
    assert counter.counts.by_op[STAND_IN_OP] == 2  # besides it, only Optimizer.step's profiler markers
    assert all(name == STAND_IN_OP or name.startswith("profiler.") for name in counter.counts.by_op)
    # step 1: p - lr / (1 - b1) * atan2((1 - b1) g, |g|), b1 = 0.9, lr = 0.1: p - atan2(0.1 sign(g), 1)
    step = torch.atan2(torch.tensor(0.1), torch.tensor(1.0))
    assert torch.allclose(first.detach(), torch.full((3,), 1 - step))
    assert torch.allclose(second.detach(), torch.full((2, 2), 1 + step))


def test_table_row_reports_syncs_by_name_and_per_segment(tmp_path: Path) -> None:
    with OpCounter() as counter:
        x = torch.arange(4.0)
        x[x > 1].sum().item()
    result = {"train": counter.counts, "evaluation": counter.counts, "segments": 2, "precision": "32-true"}
    row = table([("demo_sudoku", "rr", result)]).splitlines()[-1]
    assert counter.counts.syncs == 2  # the boolean-mask index and the item
    assert "| 2 (" in row and "_local_scalar_dense" in row
    assert per_segment(counter.counts, 2)["syncs"] == 1.0


def test_fit_arguments_use_generated_sudoku_when_the_test_split_is_absent(tmp_path: Path) -> None:
    args = fit_arguments(recipe_path("trm_sudoku"), 4, tmp_path, tmp_path / "no-shared")
    config = yaml.safe_load(Path(args[1]).read_text())
    assert config["data"]["class_path"] == "datamodules.GeneratedSudoku" and config["data"]["init_args"]["size"] == 9
    assert "--data.init_args.batch_size=4" in args and "--trainer.max_steps=3" in args


def test_gpu_check_dry_run_prints_capped_commands() -> None:
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                         text=True, timeout=30, check=True)
    commands = [line for line in out.stderr.splitlines() if line.startswith("+ timeout ")]
    assert len(commands) == 5
    assert any("--compile off segment" in c and "--batch 768" in c for c in commands)
    assert any("max_time=00:00:03:00" in c for c in commands)
    assert set(COMPILE) == {"off", "on", "segment"}
