"""`ReasoningBoard` in TensorBoard: filmstrips, the exact-accuracy-by-step curve, gradient norm, throughput, named lr
tags and no `hp_metric`, from a tiny `rr fit` of the demo recipe; every recipe lists the board."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from recursive_reasoning.cli import main
from recursive_reasoning.module import RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo_sudoku.yaml"
RECIPES = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "bakeoff").glob("*.yaml"))
BOARD = "recursive_reasoning.board.ReasoningBoard"

TINY_FIT = [
    "fit", f"--config={DEMO}",
    "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--trainer.log_every_n_steps=2",
    "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--model.network.hidden_size=32", "--model.network.num_heads=4", "--model.network.puzzle_emb_len=1",
    "--model.network.num_layers=1", "--model.strategy.init_args.cycles=1", "--model.strategy.init_args.latent_steps=1",
    "--model.strategy.init_args.supervision_steps=3", "--model.optim.warmup_steps=2",
    "--data.init_args.size=4", "--data.init_args.train_size=64", "--data.init_args.val_size=8",
    "--data.init_args.test_size=8", "--data.init_args.batch_size=8", "--data.init_args.eval_batch_size=8",
]


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> EventAccumulator:
    """The TensorBoard events of a 4-step `rr fit` of the demo recipe (two validations, logging every 2 steps)."""
    root = tmp_path_factory.mktemp("board")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        main(TINY_FIT)
    files = list((root / "runs" / "demo_sudoku" / "lightning_logs").glob("version_0/events.out.tfevents.*"))
    assert len(files) == 1, files
    accumulator = EventAccumulator(str(files[0]), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_filmstrips_and_the_curve_are_images_at_each_validation(events: EventAccumulator) -> None:
    images = events.Tags()["images"]
    assert sorted(t for t in images if t.startswith("val/reasoning/")) == [f"val/reasoning/puzzle{i}" for i in range(4)]
    for tag in ("val/reasoning/puzzle0", "val/exact_accuracy_by_step"):
        shots = events.Images(tag)
        assert [s.step for s in shots] == [2, 4]
        assert all(s.width > 100 and s.height > 50 for s in shots)
    # input + 3 steps side by side: a 4x4 filmstrip is wider than tall
    strip = events.Images("val/reasoning/puzzle0")[0]
    assert strip.width > 2 * strip.height


def test_grad_norm_and_throughput_are_logged_on_logging_steps(events: EventAccumulator) -> None:
    scalars = events.Tags()["scalars"]
    logged = [e.step for e in events.Scalars("train/loss")]
    for tag in ("train/grad_norm", "train/example_segments_per_s"):
        assert tag in scalars
        values = events.Scalars(tag)
        assert all(e.value > 0 and torch.isfinite(torch.tensor(e.value)) for e in values)
    assert [e.step for e in events.Scalars("train/grad_norm")] == logged
    assert {e.step for e in events.Scalars("train/example_segments_per_s")} <= set(logged)


def test_lr_tags_are_named_and_there_is_no_hp_metric(events: EventAccumulator) -> None:
    scalars = events.Tags()["scalars"]
    assert {"lr-OptimizerBundle/dense", "lr-OptimizerBundle/puzzle_table"} <= set(scalars)
    assert not any("/pg" in tag for tag in scalars)
    assert "hp_metric" not in scalars


def test_every_recipe_lists_the_board() -> None:
    missing = [path.name for path in RECIPES
               if BOARD not in [c["class_path"] for c in yaml.safe_load(path.read_text())["trainer"]["callbacks"]]]
    assert not missing


def test_print_config_shows_the_board(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--config={DEMO}", "--print_config"])
    assert exit_info.value.code in (0, None)
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    board = [c for c in callbacks if c["class_path"] == BOARD]
    assert board and board[0]["init_args"] == {"puzzles": 4, "per_row": 9}


def test_optimizer_state_without_group_names_loads_keeping_the_names() -> None:
    """Checkpoints written before the groups had names resume, and the lr tags keep this run's names."""
    network = NetworkConfig(hidden_size=32, num_heads=4, num_layers=1, puzzle_emb_len=1)
    model = RecursiveReasoner(network=network, vocab_size=6, seq_len=16, num_puzzle_ids=2)
    optimizer = model.configure_optimizers()["optimizer"]
    assert [group["name"] for group in optimizer.param_groups] == ["dense", "puzzle_table"]
    old = optimizer.state_dict()
    for member in old["members"]:
        for group in member["param_groups"]:
            del group["name"]
            group["lr"] = 0.25
    optimizer.load_state_dict(old)
    assert [group["name"] for group in optimizer.param_groups] == ["dense", "puzzle_table"]
    assert [group["lr"] for group in optimizer.param_groups] == [0.25, 0.25]
    assert optimizer.param_groups == [g for member in optimizer.optimizers for g in member.param_groups]
