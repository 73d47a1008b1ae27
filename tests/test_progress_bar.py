"""The GPU recipes redraw the progress bar every 50 steps, and `--trainer.enable_progress_bar=false` still turns it
off (the CLI drops the recipe's progress-bar callback, nothing else); the CPU recipes keep Lightning's per-step bar."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from datamodules.base import PuzzleDataModule
from recursive_reasoning.cli import ReasoningCLI, main
from recursive_reasoning.module import RecursiveReasoner

ROOT = Path(__file__).resolve().parents[1]
BAR = "lightning.pytorch.callbacks.TQDMProgressBar"
GPU_SETTING = re.compile(r"^\s+(compile: segment|forward_dtype: bfloat16)\s*$", re.M)
GPU_RECIPES = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if GPU_SETTING.search(p.read_text()))
CPU_RECIPES = sorted(p.stem for p in (ROOT / "configs").glob("*.yaml") if p.stem not in GPU_RECIPES)
# A GPU recipe built on a CPU from generated data: the recipe's trainer callbacks are what is under test.
ON_CPU = ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32-true",
          "--model.network.compile=false", "--model.network.forward_dtype=float32",
          "--data=datamodules.GeneratedSudoku", "--data.init_args.size=9", "--data.init_args.train_size=8",
          "--data.init_args.val_size=4", "--data.init_args.test_size=4"]


def recipe(name: str) -> str:
    return f"--config={ROOT / 'configs' / f'{name}.yaml'}"


def printed_callbacks(*args: str) -> list[dict[str, Any]]:
    """The trainer callbacks `rr fit ... --print_config` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), mock.patch.object(sys, "argv", ["rr"]), pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    return yaml.safe_load(out.getvalue())["trainer"]["callbacks"] or []


def built(*args: str) -> ReasoningCLI:
    """The CLI of `rr fit ARGS` after it built the data module, model and Trainer, stopped before fitting."""
    clis: list[ReasoningCLI] = []
    with mock.patch.object(ReasoningCLI, "_run_subcommand", lambda cli, subcommand: clis.append(cli)), \
            mock.patch.object(sys, "argv", ["rr"]):
        main(["fit", *args])
    assert len(clis) == 1, "rr fit reached its fit step once"
    return clis[0]


def callback_names(callbacks: list[Any]) -> list[str]:
    return [type(c).__name__ for c in callbacks]


def test_gpu_and_cpu_recipes_are_found() -> None:
    assert "trm_sudoku" in GPU_RECIPES and "hrm_sudoku" in GPU_RECIPES and "rsm_maze" in GPU_RECIPES
    assert "demo_sudoku" in CPU_RECIPES and "futoshiki" in CPU_RECIPES


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_gpu_recipe_prints_a_progress_bar_refreshing_every_50_steps(name: str) -> None:
    bars = [c for c in printed_callbacks(recipe(name)) if c["class_path"] == BAR]
    assert len(bars) == 1 and bars[0]["init_args"]["refresh_rate"] == 50


@pytest.mark.parametrize("name", CPU_RECIPES)
def test_cpu_recipe_lists_no_progress_bar(name: str) -> None:
    assert not [c for c in printed_callbacks(recipe(name)) if "ProgressBar" in c["class_path"]]


def test_gpu_recipe_trainer_refreshes_every_50_steps(tmp_path: Path) -> None:
    cli = built(recipe("trm_sudoku"), *ON_CPU, f"--trainer.default_root_dir={tmp_path}")
    bar = cli.trainer.progress_bar_callback
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 50


def test_disabled_bar_drops_only_the_recipe_progress_bar(tmp_path: Path) -> None:
    with_bar = built(recipe("trm_sudoku"), *ON_CPU, f"--trainer.default_root_dir={tmp_path / 'on'}")
    cli = built(recipe("trm_sudoku"), *ON_CPU, f"--trainer.default_root_dir={tmp_path / 'off'}",
                "--trainer.enable_progress_bar=false")
    assert cli.trainer.progress_bar_callback is None
    assert not [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]
    expected = [n for n in callback_names(with_bar.trainer.callbacks) if n != "TQDMProgressBar"]
    assert callback_names(cli.trainer.callbacks) == expected, "every other callback the recipe lists is kept"
    parsed = [c.class_path for c in cli.config["fit"].trainer.callbacks]  # what the saved config.yaml records
    assert BAR not in parsed and "recursive_reasoning.callbacks.EMA" in parsed


def test_disabled_bar_drops_a_command_line_bar_and_keeps_a_command_line_callback(tmp_path: Path) -> None:
    cli = built(recipe("demo_sudoku"), "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}",
                "--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar",
                "--trainer.callbacks+=recursive_reasoning.callbacks.RunSummary", "--trainer.enable_progress_bar=false")
    assert cli.trainer.progress_bar_callback is None
    assert "RunSummary" in callback_names(cli.trainer.callbacks)


def test_benchmark_style_cli_without_subcommand_drops_the_bar_too(tmp_path: Path) -> None:
    args = [recipe("trm_sudoku"), *ON_CPU, f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false"]
    with mock.patch.object(sys, "argv", ["rr"]):
        cli = ReasoningCLI(RecursiveReasoner, PuzzleDataModule, subclass_mode_data=True, run=False, args=args,
                           save_config_kwargs={"overwrite": True}, auto_configure_optimizers=False)
    assert cli.trainer.progress_bar_callback is None


def test_cpu_recipe_keeps_lightnings_every_step_bar(tmp_path: Path) -> None:
    cli = built(recipe("demo_sudoku"), "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}")
    bar = cli.trainer.progress_bar_callback
    assert type(bar) is TQDMProgressBar and bar.refresh_rate == 1
    off = built(recipe("demo_sudoku"), "--trainer.max_steps=1", f"--trainer.default_root_dir={tmp_path}",
                "--trainer.enable_progress_bar=false")
    assert off.trainer.progress_bar_callback is None
