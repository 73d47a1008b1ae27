"""The `rr` command line: every shipped recipe trains one step, config errors are clear, fit -> test works."""

from __future__ import annotations

import gzip
import importlib
import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import require_shared
from jsonargparse import ArgumentParser

from datamodules.base import PuzzleDataModule
from datamodules.kinds import PuzzleKind

from recursive_reasoning.cli import main
from strategies import TRM

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# the slowest recipe's one-step run (RSM's maze depth; rsm_sudoku runs the same code path by default): make test-all
SLOW_CONFIGS = {"rsm_maze"}

TINY = [
    "--trainer.max_steps=1",
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.precision=32-true",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.val_check_interval=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.network.compile=false",  # a CPU run: no segment compile, fp32 states (the GPU recipes set both)
    "--model.network.forward_dtype=float32",
    "--model.network.hidden_size=32",
    "--model.network.num_heads=4",
    "--model.strategy.init_args.supervision_steps=2",
    "--data.init_args.batch_size=4",
    "--data.init_args.num_workers=0",
]


# Tiny values for the data modules' conventional size parameters, set wherever a data module's __init__ has one
# that takes an int: a new data module with these names is shrunk with no edit here, one without them trains its
# defaults. The held-out counts fit the generated test file (TINY_ROWS - TINY_TRAIN_ROWS rows).
TINY_DATA = {"train_size": 16, "val_size": 4, "test_size": 4, "subsample": 16, "augmentations": 2, "max_tasks": 2,
             "val_tasks": 1, "val_groups": 1, "test_groups": 1}
TINY_ROWS, TINY_TRAIN_ROWS = 24, 16


def _takes_int(hint: object) -> bool:
    return hint is int or int in typing.get_args(hint)


def _data_module(data: dict, init_args: dict) -> PuzzleDataModule:
    """The config's data module with `init_args` over its own, instantiated as the command line does."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(PuzzleDataModule, "data")
    config = parser.parse_object({"data": {"class_path": data["class_path"],
                                           "init_args": {**data.get("init_args", {}), **init_args}}})
    return parser.instantiate_classes(config).data


def _csv_data_dir(kind: PuzzleKind, directory: Path) -> Path:
    """train.csv and test.csv of generated puzzles in the layout the CSV data modules read (datamodules.sources):
    header source,question,answer,rating and each puzzle and answer as the kind's compact text."""
    inputs, labels = kind.generate(TINY_ROWS, np.random.default_rng(0))
    rows = [f"tiny,{kind.compact(x)},{kind.compact(y)},0" for x, y in zip(inputs, labels)]
    directory.mkdir()
    for name, part in (("train", rows[:TINY_TRAIN_ROWS]), ("test", rows[TINY_TRAIN_ROWS:])):
        (directory / f"{name}.csv").write_text("\n".join(["source,question,answer,rating", *part]) + "\n")
    return directory


def data_overrides(config: Path, tmp_path: Path) -> list[str]:
    """Command-line options that make a recipe's data module tiny, derived from its __init__ signature alone.

    Every TINY_DATA parameter it has is shrunk, a cache_dir goes under tmp_path, and a data_dir (a module reading
    files) becomes a directory of puzzles its kind generates, or the shared data where the kind has no generator.
    """
    data = yaml.safe_load(config.read_text())["data"]
    module_name, _, class_name = data["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    parameters = inspect.signature(cls).parameters
    hints = typing.get_type_hints(cls.__init__)
    tiny: dict[str, object] = {name: value for name, value in TINY_DATA.items()
                               if name in parameters and _takes_int(hints.get(name))}
    if "cache_dir" in parameters:
        tiny["cache_dir"] = str(tmp_path / "cache")
    if "data_dir" in parameters:
        tiny["data_dir"] = str(require_shared("data"))
        kind = _data_module(data, tiny).puzzle_kind
        try:
            tiny["data_dir"] = str(_csv_data_dir(kind, tmp_path / "data"))
        except ValueError:  # no generator (ARC): the shared data, kept small by the sizes above
            pass
    return [f"--data.init_args.{name}={value}" for name, value in tiny.items()]


@pytest.mark.parametrize("config", [pytest.param(c, marks=pytest.mark.slow) if c.stem in SLOW_CONFIGS else c
                                    for c in CONFIGS], ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_trains_one_step(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # checkpoints and logs land in tmp_path
    strategy_args = yaml.safe_load(config.read_text())["model"]["strategy"].get("init_args", {})
    tiny = [a for a in TINY if "supervision_steps" in strategy_args or "supervision_steps" not in a]  # RSM has none
    args = ["fit", f"--config={config}", *tiny, *data_overrides(config, tmp_path)]
    main(args)
    assert list(tmp_path.rglob("*.ckpt")), "a checkpoint was written"


def run_rr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recursive_reasoning", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_print_config_shows_the_paper_recipe(tmp_path: Path) -> None:
    result = run_rr("fit", f"--config={ROOT / 'configs' / 'trm_sudoku.yaml'}", "--print_config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    strategy = printed["model"]["strategy"]
    assert strategy["class_path"] == "strategies.TRM"
    assert strategy["init_args"] == {"cycles": 3, "latent_steps": 6, "supervision_steps": 16, "halt_exploration": 0.1,
                                     "loss_type": "stablemax", "halt_loss_weight": 0.5, "eval_early_exit": False}
    network, optim = printed["model"]["network"], printed["model"]["optim"]
    assert (network["hidden_size"], network["mixer"], network["positions"], network["puzzle_emb_len"]) == (
        512, "mlp", "none", 16)
    assert (optim["lr"], optim["weight_decay"], optim["warmup_steps"], optim["betas"]) == (1e-4, 1.0, 2000, [0.9, 0.95])
    assert printed["data"]["init_args"]["batch_size"] == 768
    assert printed["data"]["init_args"]["augmentations"] == 1000
    assert printed["trainer"]["max_steps"] == 65104
    assert printed["trainer"]["precision"] == "bf16-mixed"
    ema = [c for c in printed["trainer"]["callbacks"] if c["class_path"] == "recursive_reasoning.callbacks.EMA"]
    assert ema and ema[0]["init_args"]["decay"] == 0.999


def test_unknown_config_key_is_rejected_by_name(tmp_path: Path) -> None:
    result = run_rr("fit", f"--config={ROOT / 'configs' / 'demo_sudoku.yaml'}", "--model.network.hiden_size=3",
                    "--print_config", cwd=tmp_path)
    assert result.returncode != 0
    assert "hiden_size" in result.stderr
    bad = tmp_path / "bad.yaml"
    recipe = yaml.safe_load((ROOT / "configs" / "demo_sudoku.yaml").read_text())
    recipe["model"]["strategy"]["init_args"]["cylces"] = 2
    bad.write_text(yaml.safe_dump(recipe))
    result = run_rr("fit", f"--config={bad}", "--print_config", cwd=tmp_path)
    assert result.returncode != 0
    assert "cylces" in result.stderr


def test_missing_data_directory_names_the_path(tmp_path: Path) -> None:
    result = run_rr("fit", f"--config={ROOT / 'configs' / 'trm_sudoku.yaml'}", *TINY,
                    "--data.init_args.data_dir=nowhere/sudoku", cwd=tmp_path)
    assert result.returncode != 0
    assert "nowhere/sudoku" in result.stderr and "train.csv" in result.stderr


def test_fit_then_test_from_checkpoint_end_to_end(tmp_path: Path) -> None:
    config = ROOT / "configs" / "demo_sudoku.yaml"
    common = [f"--config={config}", *TINY[:3], "--trainer.precision=32-true", "--trainer.enable_progress_bar=false",
              "--model.network.hidden_size=32", "--model.network.num_heads=4",
              "--model.strategy.init_args.supervision_steps=2", "--data.init_args.size=4",
              "--data.init_args.train_size=64", "--data.init_args.val_size=8", "--data.init_args.test_size=8",
              "--data.init_args.batch_size=8"]
    fit = run_rr("fit", *common, "--trainer.max_steps=3", "--trainer.val_check_interval=3", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = tmp_path / "runs" / "demo_sudoku" / "latest" / "checkpoints" / "last.ckpt"
    assert checkpoint.exists()
    # The checkpoint rebuilds the trained strategy and network (not defaults) and loads with weights_only=True.
    from recursive_reasoning.module import RecursiveReasoner

    restored = RecursiveReasoner.load_from_checkpoint(checkpoint, weights_only=True)
    assert repr(restored.strategy) == repr(TRM(cycles=2, latent_steps=2, supervision_steps=2, halt_exploration=0.1))
    assert restored.net.hidden_size == 32 and restored.net.seq_len == 16
    test = run_rr("test", *common, f"--ckpt_path={checkpoint}", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/exact_accuracy" in test.stdout
    # Test-time compute given on the command line survives LightningCLI's reading of the checkpoint's hparams.
    voted = run_rr("test", *common, f"--ckpt_path={checkpoint}", "--model.test_time.copies=2",
                   "--model.test_time.selection=checker", cwd=tmp_path)
    assert voted.returncode == 0, voted.stderr[-3000:]
    assert "test/exact_accuracy_label_free" in voted.stdout and "test/steps_run_per_puzzle" in voted.stdout


@pytest.mark.slow  # 40-80 s; the ARC evaluator, voting and submission are tested in-process in tests/test_arc_eval.py
def test_arc_fit_then_test_prints_pass_at_k_and_writes_a_submission(tmp_path: Path) -> None:
    config = ROOT / "configs" / "trm_arc1.yaml"
    common = [f"--config={config}", *[a for a in TINY if "max_steps" not in a and "val_check" not in a],
              *data_overrides(config, tmp_path), "--trainer.default_root_dir=run"]
    fit = run_rr("fit", *common, "--trainer.max_steps=2", "--trainer.val_check_interval=2", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    checkpoint = next((tmp_path / "run").rglob("last.ckpt"))
    saved = torch.load(checkpoint, weights_only=True)
    assert len(saved["ARC"]["puzzle_map"]["task_of_id"]) == saved["hyper_parameters"]["num_puzzle_ids"]
    test = run_rr("test", *common, f"--ckpt_path={checkpoint}", cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/pass@1" in test.stdout and "test/pass@2" in test.stdout
    submission = json.loads(next((tmp_path / "run").rglob("submission_test_step2.json")).read_text())
    assert sorted(submission) == ["00576224", "009d5c81"]
    assert set(submission["00576224"][0]) == {"attempt_1", "attempt_2"}
    # rr solve on an evaluation task the model trained on (its own puzzle ids), voting over 2 of its augmentations.
    with gzip.open(require_shared("data/arc-agi-1/evaluation.json.gz"), "rt") as f:
        task = json.load(f)["00576224"]
    (tmp_path / "00576224.json").write_text(json.dumps(task))  # ARC's per-task files are named by task id
    solve = run_rr("solve", f"--ckpt_path={checkpoint}", f"--file={tmp_path / '00576224.json'}", "--copies=2", "--json",
                   f"--trace={tmp_path / 'arc.png'}", cwd=tmp_path)
    assert solve.returncode == 0, solve.stderr[-3000:]
    answer = json.loads(solve.stdout)
    assert answer["puzzle"] == "00576224[0]" and isinstance(answer["correct"], bool)
    assert answer["passes_checker"] is None and (tmp_path / "arc.png").stat().st_size > 0
    # The same checkpoint against another augmentation plan is refused before any weight is loaded.
    other = run_rr("test", *common, f"--ckpt_path={checkpoint}", "--data.init_args.seed=1", cwd=tmp_path)
    assert other.returncode != 0 and "puzzle-id map differs" in other.stderr
