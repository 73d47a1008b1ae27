"""Smoke tests of benchmarks/hot_path.py's counting and of benchmarks/gpu_check.sh's dry run (counts, not times)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.hot_path import (  # noqa: E402
    LOOP, STAND_IN_OP, WINDOWS, _FusedAdamATan2, collective_summary, ddp_table, fit_arguments, per_segment, phase_of,
    phase_differences, phase_table, recipe_path, table,
)
from benchmarks.throughput import COMPILE  # noqa: E402
from recursive_reasoning.dispatch_counts import METADATA_OPS, Counts, OpCounter, op_base_name  # noqa: E402


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
    args = fit_arguments(recipe_path("trm_sudoku"), 4, tmp_path, tmp_path / "no-shared", "32-true")
    config = yaml.safe_load(Path(args[1]).read_text())
    assert config["data"]["class_path"] == "datamodules.GeneratedSudoku" and config["data"]["init_args"]["size"] == 9
    assert "--data.init_args.batch_size=4" in args and "--trainer.max_steps=3" in args
    network = config["model"]["network"]
    assert network["compile"] is False and network["forward_dtype"] == "float32", "counted eager, as the reference"


def test_gpu_check_dry_run_prints_capped_commands() -> None:
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                         text=True, timeout=30, check=True)
    commands = [line for line in out.stderr.splitlines() if line.startswith("+ timeout ")]
    assert len(commands) == 5
    assert any("--compile off segment" in c and "--batch 768" in c for c in commands)
    assert any("max_time=00:00:03:00" in c for c in commands)
    assert set(COMPILE) == {"off", "on", "segment"}


def test_sparse_gradients_are_counted_and_scopes_split_the_ops() -> None:
    """A sparse embedding gradient (no storage) is counted like any tensor, its host copy included; every op lands in
    the total and in the innermost open scope of each kind; views do not count as kernel ops."""
    table = torch.nn.Embedding(10, 4, sparse=True)
    with OpCounter() as counter:
        with counter.scope("phase", "forward"), counter.scope("phase", "inner"):
            loss = table(torch.tensor([1, 2])).sum()
        with counter.scope("phase", "backward"):
            loss.backward()
        table.weight.grad.coalesce().to("cpu")._values().t()
    counts, phases = counter.counts, counter.counts.scopes["phase"]
    assert table.weight.grad.is_sparse and counts.by_op["aten._coalesce.default"] == 1
    assert "forward" not in phases and phases["inner"].by_op["aten.embedding.default"] == 1
    assert phases["backward"].by_op["aten._sparse_coo_tensor_with_dims_and_tensors.default"] == 1
    assert counts.ops == sum(c.ops for c in phases.values()) + 5  # is_coalesced, _coalesce, _values, detach, t
    assert counts.calls["phase"] == {"forward": 1, "inner": 1, "backward": 1}
    views = sum(n for name, n in counts.by_op.items() if op_base_name(name) in METADATA_OPS)
    assert 0 < views and counts.kernel_ops == counts.ops - views
    assert counts.by_name()["embedding"] == 1


def test_phase_of_scopes_a_method_and_a_closure_and_restores_it() -> None:
    class Stepper:
        def step(self, closure=None) -> None:
            torch.ones(2).add(1)
            if closure is not None:
                closure()

    stepper = Stepper()
    with OpCounter() as counter:
        with phase_of(counter, stepper, "step", "optimiser", closure_label="loop"):
            stepper.step(closure=lambda: torch.zeros(3).mul(2))
        stepper.step()
    phases = counter.counts.scopes["phase"]
    assert phases["optimiser"].by_name() == {"ones": 1, "add": 1}
    assert phases["loop"].by_name() == {"zeros": 1, "mul": 1}
    assert "step" not in vars(stepper) and counter.counts.ops == 6


def test_phase_tables_put_the_rest_in_the_loop_row_and_rank_differences() -> None:
    def result(extra_adds: int) -> dict:
        with OpCounter() as counter:
            with counter.scope("phase", "forward: segment"):
                for _ in range(1 + extra_adds):
                    torch.ones(2).add(1)
            torch.ones(2).view(2, 1)
        return {"train": counter.counts}

    rr, reference = result(2), result(0)
    lines = phase_table("demo", {"rr": rr, "reference": reference}).splitlines()
    assert lines[2].startswith("| forward: segment | 6 | 6 |") and lines[3].startswith(f"| {LOOP} | 2 | 1 |")
    assert lines[-1].startswith("| total | 8 | 7 |")
    differences = phase_differences("demo", rr, reference)
    assert "forward: segment (+4): add.Tensor +2, ones +2" in differences and LOOP not in differences


def test_ddp_table_splits_collectives_around_the_backward() -> None:
    counts = Counts(collectives=2, by_op=Counter({"c10d.broadcast_.default": 1, "c10d.allreduce_.default": 1}),
                    scopes={"window": {WINDOWS[0]: Counts(by_op=Counter({"c10d.broadcast_.default": 1})),
                                       WINDOWS[1]: Counts(by_op=Counter({"c10d.allreduce_.default": 1}))},
                            "phase": {"backward": Counts(collectives=1,
                                                         by_op=Counter({"c10d.allreduce_.default": 1}))}})
    summary = collective_summary(counts)
    assert summary["phases"] == {"backward": {"c10d.allreduce_.default": 1}, LOOP: {"c10d.broadcast_.default": 1}}
    row = ddp_table([("demo_sudoku", [summary])]).splitlines()[-1]
    assert row.startswith("| demo_sudoku | 0 | 1 (c10d.broadcast_.default 1) | 1 (c10d.allreduce_.default 1) | 0 (-) |")
