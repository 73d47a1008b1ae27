"""A catalogue of bad inputs across the command line, configs, data files, puzzles and checkpoints.

Each case must fail with a clear message that names the problem (and, where there is one, the fix), and must leave
what was there before untouched. The command-line cases run `rr` in a subprocess, as a user would.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import require_shared

from datamodules import ARC, GeneratedSudoku, Maze, Sudoku
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from strategies import TRM

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo_sudoku.yaml"
TINY = ["--trainer.max_steps=2", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.val_check_interval=2", "--model.network.hidden_size=16", "--model.network.num_heads=2",
        "--model.strategy.init_args.supervision_steps=2", "--data.init_args.size=4", "--data.init_args.train_size=32",
        "--data.init_args.val_size=4", "--data.init_args.test_size=4", "--data.init_args.batch_size=8"]


def rr(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recursive_reasoning", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def expect_failure(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr[-3000:]


# --- command line and configs ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["fit", "--config=nowhere.yaml"], ["nowhere.yaml"]),
        (["fit", f"--config={DEMO}", "--model.network.hidden_size=wide"], ["hidden_size", "wide"]),
        (["fit", f"--config={DEMO}", "--model.strategy.class_path=strategies.Nope"], ["strategies.Nope"]),
        (["fit", f"--config={DEMO}", "--model.strategy.init_args.supervision_steps=0"],
         ["supervision_steps must be >= 1"]),
        (["fit", f"--config={DEMO}", "--model.strategy.init_args.loss_type=hinge"], ["loss_type", "hinge"]),
        (["fit", f"--config={DEMO}", "--model.supervision_schedule=sometimes"], ["supervision_schedule"]),
        (["fit", f"--config={DEMO}", "--data.init_args.batch_size=0"], ["batch_size must be >= 1"]),
        (["solve", "--ckpt_path", "missing.ckpt", "--puzzle", "1"], ["missing.ckpt does not exist"]),
        (["import", "--source", "missing.pt", "--output", "out.ckpt"], ["missing.pt"]),
    ],
    ids=["missing-config", "wrong-type", "unknown-strategy", "zero-segments", "unknown-loss", "unknown-schedule",
         "zero-batch", "solve-missing-checkpoint", "import-missing-source"],
)
def test_command_line_and_config_errors(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    expect_failure(rr(*args, cwd=tmp_path), *fragments)


# --- data files and data sets ------------------------------------------------------------------------------------

def sudoku_csv(tmp_path: Path, rows: list[str], header: str = "source,question,answer,rating") -> Path:
    directory = tmp_path / "sudoku"
    directory.mkdir(exist_ok=True)
    good = gzip.open(require_shared("data/sudoku-extreme/train_random1k.csv.gz"), "rt").read().splitlines()
    (directory / "train.csv").write_text("\n".join([header, *rows]) + "\n")
    (directory / "test.csv").write_text("\n".join(good[:5]) + "\n")
    return directory


@pytest.mark.parametrize(
    ("rows", "header", "fragments"),
    [
        (["x,123,456,0"], "source,question,answer,rating", ["train.csv:2", "question has 3 characters, expected 81"]),
        ([], "id,puzzle,solution", ["train.csv:1", "expected the header"]),
        ([], "source,question,answer,rating", ["holds no"]),
    ],
    ids=["short-row", "wrong-header", "empty-file"],
)
def test_bad_sudoku_files_are_named(tmp_path: Path, rows: list[str], header: str, fragments: list[str]) -> None:
    data = Sudoku(data_dir=str(sudoku_csv(tmp_path, rows, header)), subsample=None, augmentations=1, val_size=2,
                  test_size=2, batch_size=2)
    with pytest.raises(ValueError) as info:
        data.setup()
    for fragment in fragments:
        assert fragment in str(info.value)


def test_a_maze_with_no_path_is_named(tmp_path: Path) -> None:
    directory = tmp_path / "maze"
    directory.mkdir()
    rows = gzip.open(require_shared("data/maze-30x30-hard-1k/train.csv.gz"), "rt").read().splitlines()
    source, question, answer, moves = rows[1].split(",")
    sealed = list(question)
    start = question.index("S")
    for cell in (start - 30, start + 30, start - 1, start + 1):  # wall S in
        if 0 <= cell < 900 and abs(cell % 30 - start % 30) <= 1 and sealed[cell] != "G":
            sealed[cell] = "#"
    (directory / "train.csv").write_text(f"{rows[0]}\n{source},{''.join(sealed)},{answer},{moves}\n")
    (directory / "test.csv").write_text("\n".join(rows[:3]) + "\n")
    with pytest.raises(ValueError, match=r"train.csv:2: G cannot be reached from S"):
        Maze(data_dir=str(directory), val_size=1, test_size=1, batch_size=1).setup()


def test_a_training_set_smaller_than_one_batch_is_named(tmp_path: Path) -> None:
    data = GeneratedSudoku(size=4, train_size=4, val_size=2, test_size=2, batch_size=8, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="fewer than batch_size=8"):
        data.train_dataloader()


def test_arc_grid_colour_out_of_range_is_named(tmp_path: Path) -> None:
    directory = tmp_path / "arc" / "set"
    directory.mkdir(parents=True)
    (directory / "t1.json").write_text(json.dumps({"train": [{"input": [[1, 12]], "output": [[1]]}], "test": []}))
    with pytest.raises(ValueError, match=r"t1.json: task t1 train\[0\].input: colour 12"):
        ARC(data_dir=str(tmp_path / "arc"), train_sets=["set"], eval_set="other").num_puzzle_ids


# --- checkpoints ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """last.ckpt of a 4x4 demo-style run of two steps."""
    root = tmp_path_factory.mktemp("bad_ckpt")
    result = rr("fit", f"--config={DEMO}", *TINY, cwd=root)  # the demo's checkpoints land under root/runs
    assert result.returncode == 0, result.stderr[-3000:]
    return next(root.rglob("last.ckpt"))


def test_truncated_checkpoint_is_named_and_left_alone(trained: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    before = broken.read_bytes()
    result = rr("solve", "--ckpt_path", str(broken), "--puzzle", "1234341221434321", cwd=tmp_path)
    expect_failure(result, "broken.ckpt is not a readable PyTorch checkpoint")
    assert broken.read_bytes() == before


def test_checkpoint_of_another_width_is_refused_by_name(trained: Path, tmp_path: Path) -> None:
    """Through the Python API (the CLI takes the architecture from the checkpoint itself)."""
    data = GeneratedSudoku(size=4, train_size=32, val_size=4, test_size=4, batch_size=8, cache_dir=str(tmp_path))
    model = RecursiveReasoner(TRM(cycles=2, latent_steps=2, supervision_steps=2),
                              NetworkConfig(hidden_size=32, num_heads=2, mixer="mlp", positions="none",
                                            puzzle_emb_len=0), vocab_size=6, seq_len=16)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="network.hidden_size: checkpoint 16, this run 32"):
        trainer.test(model, datamodule=data, ckpt_path=trained)


def test_checkpoint_of_another_vocabulary_is_refused_by_name(trained: Path, tmp_path: Path) -> None:
    args = [a for a in TINY if "data.init_args.size" not in a]
    result = rr("test", f"--config={DEMO}", *args, "--data.init_args.size=6", f"--ckpt_path={trained}", cwd=tmp_path)
    expect_failure(result, "vocab_size: checkpoint 6, this run 8", "seq_len: checkpoint 16, this run 36")


def test_foreign_checkpoint_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"model": {"w": torch.zeros(1)}}, foreign)
    expect_failure(rr("solve", "--ckpt_path", str(foreign), "--puzzle", "1", cwd=tmp_path), "not an rr checkpoint")


def test_arc_checkpoint_with_another_puzzle_map_is_refused() -> None:
    data = str(require_shared("data"))
    trained_on = ARC(data_dir=data, max_tasks=2, augmentations=2, seed=0)
    other = ARC(data_dir=data, max_tasks=2, augmentations=3, seed=0)
    with pytest.raises(ValueError, match="puzzle-id map differs"):
        other.check_checkpoint({"ARC": trained_on.state_dict()})


def test_nan_loss_stops_training_before_the_weights_change(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = GeneratedSudoku(size=4, train_size=32, val_size=4, test_size=4, batch_size=8, cache_dir=str(tmp_path))
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=2),
                              NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0),
                              OptimConfig(warmup_steps=0), vocab_size=6, seq_len=16)
    with torch.no_grad():
        model.net.lm_head.weight.fill_(float("nan"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    with pytest.raises(FloatingPointError, match="the training loss is nan at step 0"):
        trainer.fit(model, datamodule=data)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) or before[k].isnan().any() for k in before)
    assert not list(tmp_path.rglob("*.ckpt"))


def test_import_never_overwrites_an_existing_file(tmp_path: Path) -> None:
    parity = torch.load(require_shared("parity/trm_mlpt_nopos.pt"), weights_only=True)
    source = tmp_path / "reference.pt"
    torch.save(parity["checkpoint_state_dict"], source)
    output = tmp_path / "ours.ckpt"
    output.write_text("keep me")
    result = rr("import", "--source", str(source), "--output", str(output), "--H_cycles", "2", "--L_cycles", "2",
                "--halt_max_steps", "4", cwd=tmp_path)
    expect_failure(result, "ours.ckpt")
    assert output.read_text() == "keep me"


# --- puzzles handed to rr solve ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("fmt", "text", "message"),
    [
        ("sudoku", "12..34..........5", "puzzle has 17 characters; a 4x4 Sudoku needs 16"),
        ("sudoku", "12..34....x.....", "invalid character 'x' at position 10"),
        ("sudoku", "12..34....9.....", "digit 9 at position 10, out of range for a 4x4 Sudoku"),
        ("maze", "S G#\n#  #\n  S \n####", "exactly one start S, found 2"),
        ("maze", "S  \n   \n  G", "maze has 3 lines; a 4x4 maze needs 4 lines of 4 characters"),
        ("arc", '{"train": [{"input": [[1]], "output": [[1]]}], "test": [{"input": [[1, 2], [3]]}]}', "ragged grid"),
        ("arc", '{"train": [', "not valid JSON"),
    ],
    ids=["sudoku-length", "sudoku-character", "sudoku-digit", "maze-two-starts", "maze-size", "arc-ragged",
         "arc-json"],
)
def test_bad_puzzles_are_named(fmt: str, text: str, message: str) -> None:
    from datamodules.kinds import ARCKind, MazeKind, SudokuKind

    formats = {"sudoku": SudokuKind(4), "maze": MazeKind(4), "arc": ARCKind()}
    with pytest.raises(ValueError, match=message):
        formats[fmt].parse(text)
