"""Catalogue of `rr` command-line behaviour that used to be silent or noisy: checkpoint hparams replacing the run's
options, integer batch limits read as fractions, untrained evaluations, unclear errors and Lightning's startup noise.
Every case runs `recursive_reasoning.cli.main` in-process on a tiny 4x4 Sudoku model and asserts the message text."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch
import yaml

from recursive_reasoning.cli import main

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo_sudoku.yaml"


def tiny(root: Path) -> list[str]:
    """Options for a 2-step fit of a 16-wide model on 32 generated 4x4 Sudokus, logging under root."""
    return [f"--config={DEMO}", "--trainer.max_steps=2", "--trainer.val_check_interval=2",
            "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}", "--trainer.limit_val_batches=1",
            "--model.network.hidden_size=16", "--model.network.num_heads=2",
            "--model.strategy.init_args.supervision_steps=2", "--data.init_args.size=4",
            "--data.init_args.train_size=32", "--data.init_args.val_size=4", "--data.init_args.test_size=8",
            "--data.init_args.batch_size=4", "--data.init_args.eval_batch_size=4",
            f"--data.init_args.cache_dir={root.parent / 'cache'}"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The last.ckpt of the tiny fit (hidden size 16, TRM with 2 segments)."""
    root = tmp_path_factory.mktemp("cli")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        main(["fit", *tiny(root / "run")])
    finally:
        os.chdir(cwd)
    return last_checkpoint(root / "run")


def last_checkpoint(root: Path) -> Path:
    """The newest last.ckpt written under root."""
    return max(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test writes its checkpoints and logs under its own tmp_path."""
    monkeypatch.chdir(tmp_path)


def saved_config(root: Path) -> dict:
    """The config.yaml of the latest run under root."""
    return yaml.safe_load(sorted(root.rglob("config.yaml"), key=lambda p: p.stat().st_mtime)[-1].read_text())


def fail(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run rr expecting an error exit; return the message (SystemExit text and stderr)."""
    with pytest.raises(SystemExit) as error:
        main(args)
    assert error.value.code not in (0, None)
    return f"{error.value.code}\n{capsys.readouterr().err}"


# --- 1. fit --ckpt_path: architecture and method refused, optimiser options take effect ----------------------------

@pytest.mark.parametrize(
    ("flag", "fragment"),
    [
        ("--model.network.hidden_size=32", "model.network.hidden_size: checkpoint 16, this run 32"),
        ("--model.network.num_layers=3", "model.network.num_layers: checkpoint 2, this run 3"),
        ("--model.strategy=strategies.HRM", "model.strategy.class_path: checkpoint 'strategies.trm.TRM'"),
        ("--model.strategy.init_args.cycles=3", "model.strategy.cycles: checkpoint 2, this run 3"),
        ("--model.supervision_schedule=batch", "model.supervision_schedule: checkpoint 'carry', this run 'batch'"),
    ],
    ids=["hidden-size", "layers", "strategy-class", "strategy-method", "schedule"],
)
def test_fit_from_checkpoint_refuses_another_model(trained: Path, tmp_path: Path, flag: str,
                                                    fragment: str, capsys: pytest.CaptureFixture) -> None:
    checkpoint = trained
    message = fail(["fit", *tiny(tmp_path), f"--ckpt_path={checkpoint}", "--trainer.max_steps=3", flag], capsys)
    assert fragment in message and "Drop these options" in message, message


def test_fit_from_checkpoint_at_a_new_lr_trains_at_that_lr(trained: Path, tmp_path: Path) -> None:
    checkpoint = trained
    seen: list[float] = []
    from lightning.pytorch import Callback

    class Record(Callback):
        def on_train_batch_start(self, trainer, *args) -> None:  # type: ignore[no-untyped-def]
            seen.append(trainer.optimizers[0].param_groups[0]["initial_lr"])

    import recursive_reasoning.cli as cli

    original = cli.ReasoningCLI.instantiate_trainer

    def with_record(self, **kwargs):  # type: ignore[no-untyped-def]
        trainer = original(self, **kwargs)
        trainer.callbacks.append(Record())
        return trainer

    cli.ReasoningCLI.instantiate_trainer = with_record
    try:
        main(["fit", *tiny(tmp_path), f"--ckpt_path={checkpoint}", "--trainer.max_steps=3", "--model.optim.lr=1e-5"])
    finally:
        cli.ReasoningCLI.instantiate_trainer = original
    assert seen == [1e-5], seen
    assert saved_config(tmp_path)["model"]["optim"]["lr"] == 1e-5  # config.yaml records what ran
    resumed = torch.load(last_checkpoint(tmp_path), weights_only=True)
    assert resumed["lr_schedulers"][0]["base_lrs"][0] == 1e-5
    assert resumed["hyper_parameters"]["optim"]["lr"] == 1e-5


# --- 2. evaluation-time strategy options on the command line take effect ----------------------------------------

def test_test_from_checkpoint_uses_the_command_lines_supervision_steps(trained: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    checkpoint = trained
    main(["test", *tiny(tmp_path), f"--ckpt_path={checkpoint}", "--model.strategy.init_args.supervision_steps=4"])
    assert saved_config(tmp_path)["model"]["strategy"]["init_args"]["supervision_steps"] == 4
    table = capsys.readouterr().out
    steps = next(line for line in table.splitlines() if "test/steps" in line)
    assert float(steps.split()[-1]) == 4.0, table  # every example ran 4 segments, not the checkpoint's 2


def test_test_from_checkpoint_refuses_another_architecture(trained: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    checkpoint = trained
    args = [a for a in tiny(tmp_path) if "hidden_size" not in a]  # the recipe's 64 against the checkpoint's 16
    message = fail(["test", *args, f"--ckpt_path={checkpoint}"], capsys)
    assert "model.network.hidden_size: checkpoint 16, this run 64" in message, message


# --- 3. an integer batch limit is a count --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["limit_train_batches", "limit_val_batches", "limit_test_batches",
                                  "limit_predict_batches"])
def test_integer_batch_limit_stays_a_count(name: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["test", *tiny(tmp_path), f"--trainer.{name}=1", "--print_config"])
    value = yaml.safe_load(capsys.readouterr().out)["trainer"][name]
    assert value == 1 and type(value) is int, value


def test_limit_test_batches_1_runs_one_batch(trained: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    checkpoint = trained
    from lightning.pytorch import Trainer

    seen: list[int] = []
    original = Trainer.test

    @functools.wraps(original)  # LightningCLI reads the subcommand's options from this signature
    def record(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = original(self, *args, **kwargs)
        seen.append(self.num_test_batches[0])
        return result

    Trainer.test = record
    try:
        main(["test", *tiny(tmp_path), f"--ckpt_path={checkpoint}", "--trainer.limit_test_batches=1"])
    finally:
        Trainer.test = original
    assert seen == [1], seen  # 8 test puzzles in batches of 4: 2 batches before


# --- 4. evaluating without a checkpoint says it is an untrained baseline ------------------------------------------

@pytest.mark.parametrize("command", ["validate", "test"])
def test_evaluation_without_checkpoint_warns_untrained(command: str, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match=f"rr {command} without --ckpt_path evaluates an UNTRAINED model"):
        main([command, *tiny(tmp_path), "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"])


# --- 5. messages ---------------------------------------------------------------------------------------------------

def test_yaml_syntax_error_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  network:\n    hidden_size: [64\n")
    message = fail(["fit", f"--config={bad}"], capsys)
    assert message.startswith(f"error: {bad}, line 4") and "invalid YAML" in message, message


@pytest.mark.parametrize(("flag", "head"), [
    ("--model.network.hiden_size=3", "error: model.network: Option 'hiden_size' is not accepted"),
    ("--model.strategy.init_args.cylces=3", "error: model.strategy: Option 'cylces' is not accepted"),
])
def test_config_typo_reason_comes_first(flag: str, head: str, capsys: pytest.CaptureFixture) -> None:
    message = fail(["fit", f"--config={DEMO}", flag], capsys)
    lines = message.strip().splitlines()
    assert lines[1] == head and "usage:" not in message, message


def test_misspelt_command_suggests_and_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    message = fail(["sovle"], capsys)
    assert "did you mean 'solve'?" in message
    assert "fit, validate, test, predict, solve, import, bakeoff" in message


def test_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for command in ("fit", "validate", "test", "predict", "rr solve", "rr import"):
        assert command in out, out


def test_version_is_printed(capsys: pytest.CaptureFixture) -> None:
    from importlib.metadata import version

    main(["--version"])
    assert capsys.readouterr().out.strip() == f"rr {version('rr')}"


# --- 6. no startup noise --------------------------------------------------------------------------------------------

NOISE = ["litlogger", "isinstance(treespec, LeafSpec)", "Total Flops", "FLOPs", "WeightAveraging callback",
         "dirpath has changed"]


def test_fit_and_test_print_none_of_lightnings_noise(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    caplog: pytest.LogCaptureFixture,
                                                    recwarn: pytest.WarningsRecorder) -> None:
    main(["fit", *tiny(tmp_path), "--trainer.enable_model_summary=true"])
    checkpoint = last_checkpoint(tmp_path)
    main(["fit", *tiny(tmp_path / "again"), f"--ckpt_path={checkpoint}", "--trainer.max_steps=3"])  # new dirpath
    main(["test", *tiny(tmp_path), f"--ckpt_path={checkpoint}"])
    captured = capsys.readouterr()
    output = captured.out + captured.err + caplog.text + "\n".join(str(w.message) for w in recwarn)
    assert "Trainable params" in output  # the summary itself is still there
    for noise in NOISE:
        assert noise not in output, noise


def test_predict_writes_its_predictions_where_it_says(trained: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """Before: `rr predict` computed every answer and wrote none of them anywhere."""
    with caplog.at_level("INFO"):
        main(["predict", *tiny(tmp_path / "run"), f"--ckpt_path={trained}"])
    files = list((tmp_path / "run").rglob("predictions.pt"))
    assert len(files) == 1, "one predictions file in the run's log directory"
    assert f"rr predict: 8 predictions written to {files[0]}" in caplog.text
    rows = torch.load(files[0], weights_only=True)
    assert rows["predictions"].shape == (8, 16), "every test puzzle of the 4x4 split, one answer token per cell"
    assert sorted(rows["indices"].tolist()) == list(range(8)), "each dataset index once"
    assert rows["steps"].shape == (8,)


@pytest.mark.parametrize(("flag", "message"), [
    ("--data.init_args.batch_size=0", "error: batch_size must be >= 1, got 0"),
    ("--model.strategy.init_args.supervision_steps=0", "error: supervision_steps must be >= 1, got 0."),
], ids=["data", "strategy"])
def test_a_constructors_refusal_is_the_whole_message(flag: str, message: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """Before: the constructor's ValueError came inside a jsonargparse traceback and a Union-subtype dump."""
    said = fail(["fit", *tiny(tmp_path / "run"), flag], capsys)
    assert said.splitlines()[0] == message
    assert "Traceback" not in said and "Union subtypes" not in said


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_ckpt_path_that_is_no_file_is_named(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: Lightning's FileNotFoundError traceback, after the data and the model were built."""
    path = tmp_path / ("nope.ckpt" if kind == "missing" else "run")
    path.parent.mkdir(exist_ok=True)
    if kind == "directory":
        path.mkdir()
    said = fail(["test", *tiny(tmp_path / "run2"), f"--ckpt_path={path}"], capsys)
    expected = "does not exist; a run's checkpoints are in" if kind == "missing" else "is a directory; give the"
    assert f"error: --ckpt_path {path} {expected}" in said.splitlines()[0]
