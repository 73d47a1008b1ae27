"""`rr bakeoff`: a tiny grid (2 recipes x 2 seeds) runs end to end through rr fit / rr test subprocesses, writes the
results file, the summary and the plot, logs cumulative training FLOPs, and skips finished runs when rerun."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from PIL import Image

from recursive_reasoning import bakeoff
from recursive_reasoning.cli import main

ROOT = Path(__file__).resolve().parents[1]


def tiny_regime(tmp_path: Path) -> Path:
    """The shipped bake-off regime shrunk to seconds: 4x4 Sudoku, D 16, 4 steps, a validation at step 2 and 4."""
    config = yaml.safe_load((ROOT / "configs" / "bakeoff" / "sudoku6.yaml").read_text())
    config["trainer"].update(max_steps=4, val_check_interval=2, accelerator="cpu")
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"]
                                      if not c["class_path"].endswith(("LateCheckpoints", "KeepFreedMemory"))]
    config["model"]["network"].update(hidden_size=16, num_heads=2)
    config["model"]["optim"]["warmup_steps"] = 1
    config["model"]["strategy"]["init_args"]["supervision_steps"] = 2
    config["data"]["init_args"].update(size=4, train_size=40, val_size=8, test_size=8, augmentations=4,
                                       batch_size=8, eval_batch_size=8, cache_dir=str(tmp_path / "cache"))
    path = tmp_path / "regime.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def tiny_grid(tmp_path: Path) -> Path:
    grid = {
        "name": "tiny", "base": str(tiny_regime(tmp_path)), "out": str(tmp_path / "out"), "seeds": [0, 1],
        "baseline": "trm",
        "rows": [
            {"id": "trm", "label": "TRM"},
            {"id": "t1_n1", "label": "TRM T 1 n 1", "configs": [str(ROOT / "configs/ablations/trm_t1_n1.yaml")]},
        ],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_a_tiny_grid_runs_end_to_end_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tiny_grid(tmp_path)
    assert bakeoff.main([str(grid), "--jobs", "2", "--threads", "1"]) == 0
    out = tmp_path / "out"
    with (out / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["row"], r["eval"], r["seed"]) for r in rows) == sorted(
        [("trm", "test", "0"), ("trm", "test", "1"), ("t1_n1", "test", "0"), ("t1_n1", "test", "1")])
    for r in rows:
        assert r["steps"] == "4" and 0.0 <= float(r["exact_accuracy"]) <= 1.0 and float(r["train_seconds"]) > 0
        assert float(r["peak_memory_mib"]) > 0
    # training FLOPs: 4 steps x 8 examples x the analytic count per segment; the shallower row costs less
    flops = {r["row"]: int(r["train_flops"]) for r in rows}
    assert flops["t1_n1"] < flops["trm"]
    fit = json.loads((out / "trm" / "seed0" / "fit.json").read_text())
    assert [p["steps"] for p in fit["curve"]] == [2, 4]
    assert fit["curve"][0]["train_flops"] * 2 == fit["curve"][1]["train_flops"] == fit["train_flops"]
    assert "val/exact_accuracy" in fit["curve"][0]
    # the FLOPs are logged during training too, as train/flops
    events = list((out / "trm" / "seed0" / "fit").glob("lightning_logs/version_0/events.out.tfevents*"))
    assert events
    summary = (out / "summary.md").read_text()
    assert "| TRM | test | 2 |" in summary and "Δ vs trm" in summary and "noise" in summary
    with Image.open(out / "accuracy.png") as image:
        assert image.width > image.height > 100
    # the same seeds of different rows differ only in the method: same seed, same data
    tests = json.loads((out / "results.json").read_text())
    assert {r["seed"] for r in tests} == {0, 1}

    capsys.readouterr()
    before = {p: p.stat().st_mtime for p in out.glob("*/seed*/*.json")}
    assert bakeoff.main([str(grid), "--jobs", "2"]) == 0  # everything finished: nothing reruns
    assert {p: p.stat().st_mtime for p in out.glob("*/seed*/*.json")} == before
    assert "wrote" in capsys.readouterr().out


def test_grid_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": "configs/bakeoff/sudoku6.yaml", "rows": [{"id": "a b"}]}))
    with pytest.raises(ValueError, match="row id 'a b'"):
        bakeoff.load_grid(path)
    path.write_text(yaml.safe_dump({"base": "configs/none.yaml", "rows": [{"id": "a"}]}))
    with pytest.raises(FileNotFoundError, match="configs/none.yaml does not exist"):
        bakeoff.load_grid(path)
    path.write_text(yaml.safe_dump({"base": str(ROOT / "configs/bakeoff/sudoku6.yaml"), "rows": [{"id": "a"}],
                                    "baseline": "b"}))
    with pytest.raises(ValueError, match="baseline 'b' is not a row id"):
        bakeoff.load_grid(path)
    with pytest.raises(SystemExit):
        bakeoff.main([str(tmp_path / "missing.yaml")])


def printed(command: str, flags: list[str]) -> dict[str, Any]:
    """What the rr CLI parses from these flags (`--print_config`), defaults filled in."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), mock.patch.object(sys, "argv", ["rr"]), pytest.raises(SystemExit):
        main([command, *flags, "--print_config"])
    return yaml.safe_load(out.getvalue())


# what each row of the CPU grid must be: (strategy class, cycles, latent steps, shared network, layers, mixer)
SUDOKU6 = {
    "trm": ("TRM", 2, 2, True, 2, "mlp"),
    "t1_n1": ("TRM", 1, 1, True, 2, "mlp"),
    "one_step": ("TRMOneStepGradient", 2, 2, True, 2, "mlp"),
    "hrm": ("HRM", 2, 2, False, 2, "mlp"),
    "cgar_curriculum": ("CGAR", 2, 2, True, 2, "mlp"),
    "cgar": ("CGAR", 2, 2, True, 2, "mlp"),
    "act": ("TRMWithContinueACT", 2, 2, True, 2, "mlp"),
    "separate": ("TRM", 2, 2, False, 2, "mlp"),
    "layers4_n1": ("TRM", 2, 1, True, 4, "mlp"),
    "attention": ("TRM", 2, 2, True, 2, "attention"),
    "hrm_hints": ("HRM", 2, 2, False, 2, "mlp"),
}


@pytest.mark.parametrize("name", ["sudoku6", "maze10", "sudoku9"])
def test_every_shipped_grid_row_and_evaluation_parses_through_the_cli(name: str) -> None:
    grid = bakeoff.load_grid(ROOT / "benchmarks" / "grids" / f"{name}.yaml")
    assert grid.baseline == "trm" and len(grid.seeds) >= 3
    for row in grid.rows:
        flags = [*bakeoff._configs(grid, row), *row.args]
        flags = [str(ROOT / f) if f.startswith("configs/") else f for f in flags]
        config = printed("fit", flags)
        strategy, model = config["model"]["strategy"], config["model"]
        if name == "sudoku6" and row.id in SUDOKU6:
            kind, cycles, latent, shared, layers, mixer = SUDOKU6[row.id]
            assert strategy["class_path"].rsplit(".", 1)[-1] == kind, row.id
            assert (strategy["init_args"]["cycles"], strategy["init_args"]["latent_steps"]) == (cycles, latent)
            assert (model["network"]["shared"], model["network"]["num_layers"], model["network"]["mixer"]) == (
                shared, layers, mixer), row.id
            assert config["data"]["init_args"]["hints"] is (row.id == "hrm_hints")
            assert config["trainer"]["max_steps"] == 1200 and config["data"]["init_args"]["train_size"] == 1000
        for evaluation in row.evaluations[1:]:
            args = [a.replace("{checkpoints}", "runs/x") for a in evaluation.args]
            printed("test", [*flags, *args])
    if name == "sudoku6":
        assert set(SUDOKU6) | {"rsm"} == {r.id for r in grid.rows}


def test_a_recipe_without_run_summary_gets_it_appended(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"base": str(ROOT / "configs/demo_sudoku.yaml"), "rows": [{"id": "demo"}]}))
    grid = bakeoff.load_grid(path)
    flags = bakeoff._configs(grid, grid.rows[0])
    assert flags[-1] == "--trainer.callbacks+=recursive_reasoning.callbacks.RunSummary"
    callbacks = printed("fit", flags)["trainer"]["callbacks"]
    assert [c["class_path"] for c in callbacks].count("recursive_reasoning.callbacks.RunSummary") == 1
    shipped = bakeoff.load_grid(ROOT / "benchmarks/grids/sudoku6.yaml")
    assert not any("RunSummary" in f for f in bakeoff._configs(shipped, shipped.rows[0]))


def test_a_run_held_by_another_live_process_is_left_to_it_and_a_stale_lock_is_taken(tmp_path: Path) -> None:
    import subprocess

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / "held").mkdir()
        (tmp_path / "held" / ".lock").write_text(str(other.pid))
        assert not bakeoff._claim(tmp_path / "held")
    finally:
        other.kill()
        other.wait()
    assert bakeoff._claim(tmp_path / "held"), "its process is gone: the lock is stale"
    assert (tmp_path / "held" / ".lock").read_text() == str(__import__("os").getpid())
    assert bakeoff._claim(tmp_path / "fresh")


def test_an_unknown_option_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bakeoff.main([str(ROOT / "benchmarks/grids/sudoku6.yaml"), "--sed", "1", "--dry-run"])
    assert exit_info.value.code == 2
    assert "unknown option --sed" in capsys.readouterr().err
