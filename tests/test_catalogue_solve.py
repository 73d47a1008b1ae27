"""Catalogue of `rr solve` inputs and outputs (issue 12): unsolvable puzzles refused before the model runs, messages
that name the problem and the fix, options that were silently ignored, machine-readable outputs, and the sample
puzzles under examples/puzzles/ that the README's solve commands use."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from datamodules import GeneratedSudoku
from datamodules.kinds import ARCKind, MazeKind, SudokuKind
from datamodules.maze import GeneratedMaze
from datamodules.sudoku_rules import format_grid, generate
from recursive_reasoning.cli import main
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from strategies import TRM

ROOT = Path(__file__).resolve().parents[1]
PUZZLES = ROOT / "examples" / "puzzles"


def tiny_checkpoint(root: Path, name: str, data: L.LightningDataModule, vocab_size: int, seq_len: int) -> Path:
    """A tiny TRM after one training step, saved by a Trainer with its data module (so it knows its puzzles)."""
    torch.manual_seed(0)
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=2),
                              NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0),
                              OptimConfig(lr=1e-3, warmup_steps=0), vocab_size=vocab_size, seq_len=seq_len)
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0,
                        default_root_dir=root)
    trainer.fit(model, datamodule=data)
    path = root / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny checkpoints of 4x4 and 6x6 Sudoku and of 30x30 mazes (the sizes of the samples and the README)."""
    root = tmp_path_factory.mktemp("catalogue_solve")
    out = {}
    for n in (4, 6):
        data = GeneratedSudoku(size=n, train_size=16, val_size=2, test_size=2, batch_size=8, cache_dir=str(root))
        out[f"sudoku{n}"] = tiny_checkpoint(root, f"sudoku{n}", data, n + 2, n * n)
    maze = GeneratedMaze(side=30, train_size=8, val_size=1, test_size=1, batch_size=8, cache_dir=str(root))
    out["maze30"] = tiny_checkpoint(root, "maze30", maze, 6, 900)
    return out


def run(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """`rr solve ARGS` in this process: (exit status, stdout, stderr)."""
    try:
        status = main(["solve", *args]) or 0
    except SystemExit as exit:
        status = int(exit.code or 0)
    out, err = capsys.readouterr()
    return status, out, err


def digits(row: np.ndarray) -> str:
    """A Sudoku grid as its digit string, '.' for blanks."""
    return "".join("." if v == 0 else str(v) for v in row)


def strings(size: int, count: int, seed: int = 3) -> list[str]:
    """`count` generated N x N puzzles as digit strings."""
    return [digits(row) for row in generate(size, count, seed=seed)[0]]


# --- 1. unsolvable puzzles are refused by their format, saying what is wrong with the puzzle ----------------------

@pytest.mark.parametrize(
    ("fmt", "text", "message"),
    [
        (SudokuKind(4), "11..............", "digit 1 appears 2 times in row 1 (columns 1, 2)"),
        (SudokuKind(4), "..3.......3.....", "digit 3 appears 2 times in column 3 (rows 1, 3)"),
        (SudokuKind(4), "2....2..........", "digit 2 appears 2 times in box 1 (rows 1-2, columns 1-2)"),
        (SudokuKind(6), "...5.......5" + "." * 24, "digit 5 appears 2 times in box 2 (rows 1-2, columns 4-6)"),
        (SudokuKind(9), "9" * 3 + "." * 78, "digit 9 appears 3 times in row 1 (columns 1, 2, 3)"),
        (MazeKind(4), "S# G\n#   \n    \n    ", "G (row 0, column 3) cannot be reached from S (row 0, column 0)"),
        (MazeKind(4), "    \n    \n    \n   G", "exactly one start S, found 0; mark one cell S"),
        (MazeKind(4), "S  G\n    \n    \n   G", "exactly one goal G, found 2 (at row 0, column 3; row 3, column 3); "
                                                 "keep one G"),
        (ARCKind(), "{}", "holds no ARC task (an empty JSON object)"),
        (ARCKind(), '{"train": [{"input": [[1]], "output": [[2]]}], "test": []}', "task t has no test inputs"),
    ],
    ids=["sudoku-row", "sudoku-column", "sudoku-box", "sudoku6-box", "sudoku9-triple", "maze-no-path",
         "maze-no-start", "maze-two-goals", "arc-empty-object", "arc-no-test-inputs"],
)
def test_unsolvable_puzzles_are_refused_by_their_format(fmt, text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        fmt.parse(text, name="t")
    assert message in str(info.value)


def test_unsolvable_puzzle_is_refused_before_the_model_runs(checkpoints: dict[str, Path], tmp_path: Path,
                                                            capsys) -> None:
    source = tmp_path / "puzzles.txt"
    source.write_text(strings(4, 1)[0] + "\n1.1.............\n")
    output = tmp_path / "answers.jsonl"
    status, _, err = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--file", str(source), "--output",
                          str(output)], capsys)
    assert status == 2 and f"{source}:2: the givens break the rules: digit 1 appears 2 times in row 1" in err
    assert not output.exists()


def test_an_arc_file_of_an_empty_object_is_refused(tmp_path: Path) -> None:
    task = tmp_path / "task.json"
    task.write_text("{}")
    with pytest.raises(ValueError, match=r"task.json: task: holds no ARC task"):
        ARCKind().read_file(task)


# --- 2. messages that misled ------------------------------------------------------------------------------------

def test_a_29_line_maze_names_the_line_count() -> None:
    maze = "\n".join(["S" + " " * 29] + [" " * 30] * 27 + [" " * 29 + "G"])
    with pytest.raises(ValueError, match="maze has 29 lines; a 30x30 maze needs 30 lines of 30 characters"):
        MazeKind(30).parse(maze)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--batch_size", "0"), ("--batch_size", "-3"), ("--copies", "0"), ("--samples", "0"), ("--steps", "0"),
     ("--settle_k", "-1")],
)
def test_counts_below_one_name_the_option(checkpoints: dict[str, Path], flag: str, value: str, capsys) -> None:
    status, _, err = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", strings(4, 1)[0], flag, value],
                         capsys)
    assert status == 2 and f"{flag.removeprefix('--')} must be >= 1, got {int(value)}" in err


@pytest.mark.parametrize(
    ("device", "message"),
    [("gpu", "--device 'gpu' is not a torch device; use cpu, cuda or cuda:N"),
     ("cuda:7", "--device cuda:7: this machine has")],
)
def test_a_device_this_machine_lacks_is_named_not_the_checkpoint(checkpoints: dict[str, Path], device: str,
                                                                 message: str, capsys) -> None:
    status, _, err = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", strings(4, 1)[0], "--device",
                          device], capsys)
    assert status == 2 and message in err and "checkpoint" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_only_machine_says_so(checkpoints: dict[str, Path], capsys) -> None:
    status, _, err = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", strings(4, 1)[0], "--device",
                          "cuda"], capsys)
    assert status == 2 and "--device cuda: this machine has no usable CUDA GPU" in err and "use --device cpu" in err


def write_binary(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")


def write_latin1(path: Path) -> None:
    path.write_bytes("# grille \xe9t\xe9\n".encode("latin-1"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a directory, not a file; give one file of puzzles with --file"),
        (write_binary, "is a binary file, not text"),
        (write_latin1, "is not UTF-8 text (byte 9 is 0xe9)"),
        (lambda p: p.write_text("a,b\n1,2\n"), "a CSV of puzzles needs a header naming its puzzle column"),
        (lambda p: p.write_bytes(gzip.compress(b"1.......")[:12]), "is not a readable gzip file"),
    ],
    ids=["directory", "binary", "not-utf8", "csv-without-header", "truncated-gzip"],
)
def test_unreadable_puzzle_files_are_named(checkpoints: dict[str, Path], tmp_path: Path, make, message: str,
                                           capsys) -> None:
    source = tmp_path / "puzzles.txt"
    make(source)
    status, _, err = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--file", str(source)], capsys)
    assert status == 2 and message in err and "Traceback" not in err


def test_a_gzipped_puzzle_file_is_read(checkpoints: dict[str, Path], tmp_path: Path, capsys) -> None:
    source = tmp_path / "puzzles.txt.gz"
    source.write_bytes(gzip.compress(("\n".join(strings(4, 3)) + "\n").encode()))
    status, out, _ = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--file", str(source), "--json"], capsys)
    assert status == 0 and [row["input"] for row in json.loads(out)] == strings(4, 3)


def test_the_printed_grid_and_text_output_read_back(checkpoints: dict[str, Path], tmp_path: Path, capsys) -> None:
    puzzle = strings(4, 1)[0]
    grid = format_grid(SudokuKind(4).parse(puzzle)[0].inputs - 1)
    status, out, _ = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", grid, "--json"], capsys)
    assert status == 0 and json.loads(out)["input"] == puzzle
    report = tmp_path / "report.txt"
    report.write_text(f"puzzle: puzzle\n{grid}\nrule checker: fails\n\n{grid}\n")
    assert [p.inputs.tolist() for p in SudokuKind(4).read_file(report)] == [
        SudokuKind(4).parse(puzzle)[0].inputs.tolist()] * 2
    half = tmp_path / "half.txt"
    half.write_text("\n".join(grid.splitlines()[:2]) + "\n")
    with pytest.raises(ValueError, match="half.txt:1: a grid of 2 rows; a 4x4 Sudoku needs 4 rows of 4 cells"):
        SudokuKind(4).read_file(half)
    half.write_text("1.3:............\n")  # not a report line: refused, not skipped
    with pytest.raises(ValueError, match="half.txt:1: puzzle has invalid character ':' at position 3"):
        SudokuKind(4).read_file(half)


def test_an_unreadable_file_is_named(checkpoints: dict[str, Path], tmp_path: Path, monkeypatch, capsys) -> None:
    source = tmp_path / "locked.txt"
    source.write_text(strings(4, 1)[0])
    source.chmod(0)
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == source:  # root ignores file modes; refuse as the kernel does for everyone else
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    status, _, err = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--file", str(source)], capsys)
    assert status == 2 and f"cannot read puzzle file {source}: permission denied" in err


def test_an_unwritable_output_is_named_before_the_model_runs(checkpoints: dict[str, Path], tmp_path: Path,
                                                             capsys) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    status, _, err = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", strings(4, 1)[0], "--output",
                          str(blocker / "answers.jsonl")], capsys)
    assert status == 2 and f"cannot create it ({blocker} is not a writable folder); choose another path" in err
    status, _, err = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", strings(4, 1)[0], "--trace",
                          str(blocker / "trace.png")], capsys)
    assert status == 2 and "--trace" in err and "is not a writable folder" in err


def test_a_closed_pipe_stops_quietly(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    source = tmp_path / "many.txt"
    source.write_text("\n".join(strings(4, 20) * 40) + "\n")  # 800 answers: far more than a pipe buffer holds
    command = (f"{shlex.quote(sys.executable)} -m recursive_reasoning solve --ckpt_path "
               f"{shlex.quote(str(checkpoints['sudoku4']))} --file {shlex.quote(str(source))} | head -1")
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.stdout == "puzzle: many.txt:1\n"
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr[-2000:]


# --- 3. options that were silently ignored --------------------------------------------------------------------

def test_samples_without_noise_are_refused_with_the_fix(checkpoints: dict[str, Path], capsys) -> None:
    args = ["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", strings(4, 1)[0], "--samples", "8"]
    status, _, err = run(args, capsys)
    assert status == 2 and "--samples 8 without --noise runs 8 identical trajectories; add latent noise" in err
    status, out, _ = run([*args, "--noise", "0.1", "--json"], capsys)
    assert status == 0 and json.loads(out)["trajectories"] == 8


@pytest.mark.parametrize("name", ["answers.txt", "answers", "answers.json"])
def test_an_output_of_unknown_suffix_is_refused(checkpoints: dict[str, Path], tmp_path: Path, name: str,
                                                capsys) -> None:
    status, _, err = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", strings(4, 1)[0], "--output",
                          str(tmp_path / name)], capsys)
    assert status == 2 and "unknown suffix" in err and "name it .jsonl (JSON lines) or .csv" in err
    assert not (tmp_path / name).exists()


def test_a_trace_without_suffix_gets_png_and_another_suffix_is_refused(checkpoints: dict[str, Path],
                                                                       tmp_path: Path, capsys) -> None:
    args = ["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", strings(4, 1)[0], "--trace"]
    status, out, _ = run([*args, str(tmp_path / "trace")], capsys)
    assert status == 0 and f"trace: {tmp_path / 'trace.png'}" in out and not (tmp_path / "trace").exists()
    assert (tmp_path / "trace.png").read_bytes()[:4] == b"\x89PNG"
    status, _, err = run([*args, str(tmp_path / "trace.jpg")], capsys)
    assert status == 2 and "traces are PNG images; name it .png" in err


def test_an_existing_output_needs_force(checkpoints: dict[str, Path], tmp_path: Path, capsys) -> None:
    output = tmp_path / "answers.jsonl"
    output.write_text("keep me\n")
    args = ["--ckpt_path", str(checkpoints["sudoku4"]), "--puzzle", strings(4, 1)[0], "--output", str(output)]
    status, _, err = run(args, capsys)
    assert status == 2 and f"--output {output} already exists; pass --force to overwrite it" in err
    assert output.read_text() == "keep me\n"
    status, _, _ = run([*args, "--force"], capsys)
    assert status == 0 and json.loads(output.read_text())["input"] == strings(4, 1)[0]


@pytest.mark.parametrize("value", [0, -2])
def test_eval_batch_size_below_one_is_refused(tmp_path: Path, value: int) -> None:
    with pytest.raises(ValueError, match=f"eval_batch_size must be >= 1, got {value}; leave it out"):
        GeneratedSudoku(size=4, batch_size=8, eval_batch_size=value, cache_dir=str(tmp_path))
    assert GeneratedSudoku(size=4, batch_size=8, eval_batch_size=None, cache_dir=str(tmp_path)).eval_batch_size == 8


# --- 4. outputs -------------------------------------------------------------------------------------------------

def test_machine_outputs_carry_compact_answers_the_input_and_integer_steps(checkpoints: dict[str, Path],
                                                                           tmp_path: Path, capsys) -> None:
    source = tmp_path / "puzzles.txt"
    source.write_text("\n".join(strings(4, 3)) + "\n")
    output = tmp_path / "answers.csv"
    status, _, _ = run(["--ckpt_path", str(checkpoints["sudoku4"]), "--file", str(source), "--output", str(output),
                        "--copies", "2"], capsys)
    assert status == 0
    rows = list(csv.DictReader(output.open()))
    assert [row["input"] for row in rows] == strings(4, 3)
    assert all(len(row["answer"]) == 16 and set(row["answer"]) <= set("1234.") for row in rows)
    assert all(row["steps"] == "4" and row["trajectories"] == "2" for row in rows)  # 2 steps x 2 copies


@pytest.mark.parametrize(
    ("fmt", "text"),
    [(SudokuKind(4), "1234341221434321"), (MazeKind(4), "S  #\n## #\n   #\n G  "),
     (ARCKind(), '{"train": [{"input": [[1]], "output": [[2]]}], "test": [{"input": [[3, 0], [0, 4]]}]}')],
    ids=["sudoku", "maze", "arc"],
)
def test_the_compact_form_reads_back(fmt, text: str) -> None:
    tokens = fmt.parse(text)[0].inputs
    compact = fmt.compact(tokens)
    assert "\n" not in compact and "|" not in compact
    again = compact if fmt.name != "arc" else json.dumps({"train": [{"input": [[1]], "output": [[2]]}],
                                                         "test": [{"input": json.loads(compact)}]})
    assert np.array_equal(fmt.parse(again)[0].inputs, tokens)


def test_a_maze_answer_is_one_line_of_n_by_n_cells(checkpoints: dict[str, Path], capsys) -> None:
    status, out, _ = run(["--ckpt_path", str(checkpoints["maze30"]), "--file", str(PUZZLES / "maze30.txt"),
                          "--json"], capsys)
    rows = json.loads(out)
    assert status == 0 and len(rows) == 2
    assert all(len(row["answer"]) == 900 and "\n" not in row["answer"] and isinstance(row["steps"], int)
               for row in rows)
    assert rows[0]["input"] == (PUZZLES / "maze30.txt").read_text().split("\n\n")[0].replace("\n", "")


@pytest.mark.parametrize(
    ("kind", "header", "count"),
    [("sudoku4", "puzzle,solution", 3), ("sudoku4", "source,question,answer,rating", 2)],
)
def test_a_labelled_csv_reports_accuracy(checkpoints: dict[str, Path], tmp_path: Path, kind: str, header: str,
                                         count: int, capsys) -> None:
    puzzles, solutions = generate(4, count, seed=5)
    pairs = [(digits(p), digits(s)) for p, s in zip(puzzles, solutions)]
    lines = [f"{p},{s}" if header.startswith("puzzle") else f"gen,{p},{s},0" for p, s in pairs]
    source = tmp_path / "labelled.csv"
    source.write_text("\n".join([header, *lines]) + "\n")
    status, out, err = run(["--ckpt_path", str(checkpoints[kind]), "--file", str(source), "--json"], capsys)
    rows = json.loads(out) if count > 1 else [json.loads(out)]
    assert status == 0 and all(isinstance(row["correct"], bool) for row in rows)
    right = sum(row["correct"] for row in rows)
    assert f"accuracy: {right}/{count} puzzles exactly correct ({100 * right / count:.1f}%)" in err
    status, out, _ = run(["--ckpt_path", str(checkpoints[kind]), "--file", str(source)], capsys)
    assert f"accuracy: {right}/{count} puzzles exactly correct" in out and out.count("correct: ") == count


def test_a_wrong_solution_column_is_named(tmp_path: Path) -> None:
    source = tmp_path / "labelled.csv"
    source.write_text("puzzle,solution\n1...............,1234341221434.21\n")
    with pytest.raises(ValueError, match=r"labelled.csv:2: solution: the solution has a blank at position 13"):
        SudokuKind(4).read_file(source)
    source.write_text("puzzle,solution\n1...............,2143341212344321\n")
    with pytest.raises(ValueError, match="the solution changes the given at position 0"):
        SudokuKind(4).read_file(source)


# --- 5. sample puzzles and the README's solve commands -----------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "fmt", "count", "labelled"),
    [("sudoku4.txt", SudokuKind(4), 3, False), ("sudoku6.txt", SudokuKind(6), 4, False),
     ("sudoku9.txt", SudokuKind(9), 3, False), ("sudoku6_labelled.csv", SudokuKind(6), 4, True),
     ("sudoku9_labelled.csv", SudokuKind(9), 3, True), ("maze30.txt", MazeKind(30), 2, False),
     ("maze30_labelled.csv", MazeKind(30), 2, True), ("arc_mirror.json", ARCKind(), 1, True)],
)
def test_every_sample_puzzle_file_reads(name: str, fmt, count: int, labelled: bool) -> None:
    puzzles = fmt.read_file(PUZZLES / name)
    assert len(puzzles) == count and all((p.labels is not None) == labelled for p in puzzles)


def readme_solve_commands() -> list[list[str]]:
    """The `rr solve` lines of the README's shell blocks, as argument lists (comments dropped)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    return [shlex.split(line, comments=True)[2:] for line in lines if line.startswith("rr solve ")]


def test_every_readme_solve_command_runs(checkpoints: dict[str, Path], tmp_path: Path, monkeypatch,
                                         capsys) -> None:
    commands = readme_solve_commands()
    assert commands, "the README shows no rr solve command"
    monkeypatch.chdir(tmp_path)
    for args in commands:
        source = args[args.index("--file") + 1] if "--file" in args else None
        kind = "maze30" if source and "maze30" in source else "sudoku6"
        args[args.index("--ckpt_path") + 1] = str(checkpoints[kind])
        if source is not None:
            assert (ROOT / source).is_file(), f"the README solves {source}, which is not in the repository"
            args[args.index("--file") + 1] = str(ROOT / source)
        status, out, err = run(args, capsys)
        assert status == 0, (args, err[-2000:])
        assert out.strip()
    assert os.listdir(tmp_path)  # the commands that write answers or traces wrote them here
    assert np.array_equal(SudokuKind(6).read_file(PUZZLES / "sudoku6.txt")[0].inputs,
                          SudokuKind(6).parse(".2..45..6..2..4.6.2....3..........36")[0].inputs)
