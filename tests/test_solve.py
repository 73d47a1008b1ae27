"""`rr solve`: one puzzle or a file in, answers, signals, JSON / JSONL / CSV and a trace PNG out; clear errors."""

from __future__ import annotations

import csv
import json
from dataclasses import fields
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from datamodules import GeneratedSudoku
from datamodules import arc_rules
from datamodules.arc import PuzzleIdMap
from datamodules.kinds import ARCKind, SudokuKind
from datamodules.sudoku_rules import generate
from recursive_reasoning.cli import main
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from datamodules.kinds.drawing import read_png_size
from recursive_reasoning.inference import TestTimeOptions
from recursive_reasoning.solve import SolveRequest, load_solver
from strategies import TRM


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny TRM on 4x4 Sudokus after a few steps, saved by a Trainer with its data module."""
    root = tmp_path_factory.mktemp("solve")
    torch.manual_seed(0)
    data = GeneratedSudoku(size=4, train_size=64, val_size=8, test_size=8, batch_size=8, cache_dir=str(root))
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=3),
                              NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0),
                              OptimConfig(lr=1e-3, warmup_steps=0), vocab_size=6, seq_len=16)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=root)
    trainer.fit(model, datamodule=data)
    path = root / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


def puzzle_strings(count: int) -> list[str]:
    puzzles, _ = generate(4, count, seed=3)
    return ["".join("." if v == 0 else str(v) for v in row) for row in puzzles]


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    try:
        main(["solve", *args])
        status = 0
    except SystemExit as exit:
        status = int(exit.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def test_one_puzzle_prints_the_models_answer_and_signals(checkpoint: Path, capsys) -> None:
    puzzle = puzzle_strings(1)[0]
    status, out, _ = run(["--ckpt_path", str(checkpoint), "--puzzle", puzzle, "--json"], capsys)
    assert status == 0
    item = json.loads(out)
    model, fmt = load_solver(checkpoint)
    inputs = torch.from_numpy(fmt.parse(puzzle)[0].inputs)[None]
    expected = model.solve({"inputs": inputs, "puzzle_ids": torch.zeros(1, dtype=torch.long)})
    answer = expected["logits"].argmax(-1)[0].numpy()
    assert item["answer"] == fmt.compact(answer) and item["input"] == puzzle
    assert item["passes_checker"] == bool(fmt.check(inputs.numpy(), answer[None])[0])
    assert item["confidence"] == pytest.approx(torch.sigmoid(expected["halt_logits"][0]).item(), abs=1e-4)
    assert item["steps"] == 3 and item["options"] == "single pass" and isinstance(item["settled"], bool)
    status, out, _ = run(["--ckpt_path", str(checkpoint), "--puzzle", puzzle], capsys)
    assert status == 0 and "rule checker:" in out and "confidence sigmoid(q_halt):" in out


def test_trace_is_a_png_of_the_expected_size(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from datamodules.kinds.drawing import filmstrip

    trace = tmp_path / "trace.png"
    status, out, _ = run(["--ckpt_path", str(checkpoint), "--puzzle", puzzle_strings(1)[0], "--steps", "5",
                          "--trace", str(trace)], capsys)
    assert status == 0 and f"trace: {trace}" in out
    frame = SudokuKind(4).frame(np.ones(16, dtype=np.int64), np.ones(16, dtype=np.int64), None)
    expected = filmstrip([frame] * 6, ["input"] + [f"step {s} q 0.00" for s in range(1, 6)], title="puzzle", per_row=9)
    assert read_png_size(trace) == (expected.shape[1], expected.shape[0])
    assert trace.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_file_of_puzzles_writes_jsonl_and_csv(checkpoint: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "puzzles.txt"
    source.write_text("# four 4x4 puzzles\n" + "\n".join(puzzle_strings(4)) + "\n\n")
    for suffix in (".jsonl", ".csv"):
        output = tmp_path / f"answers{suffix}"
        status, out, _ = run(["--ckpt_path", str(checkpoint), "--file", str(source), "--output", str(output),
                              "--copies", "4", "--selection", "checker"], capsys)
        assert status == 0 and f"wrote 4 answers to {output}" in out
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in output.read_text().splitlines()]
        else:
            rows = list(csv.DictReader(output.open()))
        assert [row["puzzle"] for row in rows] == [f"puzzles.txt:{n}" for n in (2, 3, 4, 5)]
        assert all(row["options"] == "copies=4 selection=checker" for row in rows)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--puzzle", "12..34..........5"], "puzzle has 17 characters; a 4x4 Sudoku needs 16"),
        (["--puzzle", "12..34....x....."], "invalid character 'x' at position 10"),
        (["--puzzle", "12..34..........", "--copies", "0"], "copies must be >= 1, got 0"),
        (["--file", "nowhere.txt"], "puzzle file nowhere.txt does not exist"),
    ],
)
def test_bad_input_is_named(checkpoint: Path, args: list[str], message: str, capsys) -> None:
    status, _, err = run(["--ckpt_path", str(checkpoint), *args], capsys)
    assert status == 2 and message in err


def test_bad_checkpoints_are_named(tmp_path: Path, capsys) -> None:
    status, _, err = run(["--ckpt_path", str(tmp_path / "missing.ckpt"), "--puzzle", "1"], capsys)
    assert status == 2 and "does not exist" in err
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    status, _, err = run(["--ckpt_path", str(text), "--puzzle", "1"], capsys)
    assert status == 2 and "not a readable PyTorch checkpoint" in err
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    status, _, err = run(["--ckpt_path", str(foreign), "--puzzle", "1"], capsys)
    assert status == 2 and "not an rr checkpoint" in err


def test_several_checkpoints_vote_as_an_ensemble(checkpoint: Path, tmp_path: Path, capsys) -> None:
    puzzle = puzzle_strings(1)[0]
    status, out, _ = run(["--ckpt_path", str(checkpoint), "--puzzle", puzzle, "--json"], capsys)
    single = json.loads(out)
    status, out, _ = run(["--ckpt_path", str(checkpoint), str(checkpoint), "--puzzle", puzzle, "--json"], capsys)
    assert status == 0
    both = json.loads(out)
    assert both["options"] == "single pass ensemble=2" and both["answer"] == single["answer"]
    assert both["agreement"] == 1.0


def test_reference_perturbations_are_selectable_and_bounded(checkpoint: Path, capsys) -> None:
    puzzle = puzzle_strings(1)[0]
    status, out, _ = run(["--ckpt_path", str(checkpoint), "--puzzle", puzzle, "--json", "--copies", "4",
                          "--perturbations", "reference", "--selection", "confident_vote"], capsys)
    assert status == 0
    assert json.loads(out)["options"] == "copies=4 perturbations=reference selection=confident_vote"
    status, _, err = run(["--ckpt_path", str(checkpoint), "--puzzle", puzzle, "--copies", "5",
                          "--perturbations", "reference"], capsys)
    assert status == 2 and "has 4 cyclic digit shifts" in err


def test_help_lists_every_option(capsys) -> None:
    """The options are generated from `SolveRequest` and `TestTimeOptions`: none can be missing from --help."""
    status, out, _ = run(["--help"], capsys)
    assert status == 0
    for field in (*fields(SolveRequest), *fields(TestTimeOptions)):
        assert f"--{field.name}" in out, field.name


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "neither --puzzle nor --file given"), (["--puzzle", "1", "--file", "p.txt"], "both --puzzle and --file")],
)
def test_one_puzzle_source_is_required(checkpoint: Path, args: list[str], message: str, capsys) -> None:
    status, _, err = run(["--ckpt_path", str(checkpoint), *args], capsys)
    assert status == 2 and message in err


@pytest.mark.parametrize(
    "saved",
    [{"puzzle_kind": SudokuKind(4).describe()}, {"puzzle_format": SudokuKind(4).describe()},
     {"puzzle_format": {"kind": "sudoku", "size": 4}}],
    ids=["puzzle-kind", "older-puzzle-format-key", "oldest-kind-name"],
)
def test_checkpoints_name_their_kind_under_new_and_old_keys(checkpoint: Path, tmp_path: Path, saved: dict) -> None:
    data = torch.load(checkpoint, weights_only=True)
    assert "puzzle_kind" in data["GeneratedSudoku"]  # the data module's state, replaced by an older one below
    data["GeneratedSudoku"] = saved
    path = tmp_path / "renamed.ckpt"
    torch.save(data, path)
    _, kind = load_solver(path)
    assert kind.describe() == SudokuKind(4).describe()


def test_the_saved_data_module_state_reaches_the_kind(checkpoint: Path, tmp_path: Path) -> None:
    """ARC: the training run's puzzle-id map, saved beside the kind, gives a known task its own puzzle id."""
    puzzle_map = PuzzleIdMap(["training:t1"], np.array([-1, 0, 0]), np.tile(arc_rules.IDENTITY, (3, 1)))
    data = torch.load(checkpoint, weights_only=True)
    data["GeneratedSudoku"] = {"puzzle_kind": ARCKind().describe(), "puzzle_map": puzzle_map.state_dict()}
    path = tmp_path / "arc.ckpt"
    torch.save(data, path)
    _, kind = load_solver(path)
    task = {"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3]]}]}
    assert [p.puzzle_id for p in kind.parse(json.dumps({"t1": task, "t2": task}))] == [1, 0]
