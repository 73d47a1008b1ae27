"""The worked example of docs/strategies.md: a strategy defined outside the package, checked and run from YAML."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import Progress
from strategies.conformance import check_strategy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from full_gradient_trm import FullGradientTRM  # noqa: E402


def test_user_strategy_passes_conformance_and_runs_every_cycle_with_gradient() -> None:
    torch.manual_seed(0)
    net = ReasoningNetwork(NetworkConfig(hidden_size=32, num_heads=4, num_layers=1, puzzle_emb_len=2), 6, 9, 3)
    strategy = FullGradientTRM(cycles=2, latent_steps=2, supervision_steps=2)
    check_strategy(strategy, net)
    assert strategy.module_calls(Progress(0), True) == (6, 6)
    rebuilt = type(strategy).from_hparams(strategy.hparams())
    assert isinstance(rebuilt, FullGradientTRM) and repr(rebuilt) == repr(strategy)


def test_user_strategy_trains_from_yaml_by_class_path(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "recursive_reasoning", "fit", f"--config={ROOT / 'configs' / 'demo_sudoku.yaml'}",
            f"--config={ROOT / 'examples' / 'full_gradient_trm.yaml'}", "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0", "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
            "--model.network.hidden_size=32", "--data.init_args.size=4", "--data.init_args.train_size=32",
            "--data.init_args.val_size=4", "--data.init_args.test_size=4", "--data.init_args.batch_size=8"]
    printed = subprocess.run([*args, "--print_config"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert printed.returncode == 0, printed.stderr
    assert "class_path: full_gradient_trm.FullGradientTRM" in printed.stdout
    fit = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert not (tmp_path / "runs" / "demo_sudoku").exists(), "the example's run must not write into the demo's run"
    path = tmp_path / "runs" / "full_gradient_trm" / "latest" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["strategy"]["class_path"] == "full_gradient_trm.FullGradientTRM"
