"""`rr solve`: hand a trained model one puzzle (or a file of them) and see its answer, its signals and its reasoning.

    rr solve --ckpt_path runs/demo_sudoku/latest/checkpoints/last.ckpt --puzzle "1.3...5.2..." --trace trace.png
    rr solve --ckpt_path last.ckpt --file examples/puzzles/maze30.txt --output answers.jsonl --copies 8
    rr solve --ckpt_path last.ckpt --file examples/puzzles/arc_mirror.json --json
    rr solve --ckpt_path runs/demo_sudoku/latest/checkpoints/late-step*.ckpt --file puzzles.txt --output a.csv
    rr solve --ckpt_path last.ckpt --file examples/puzzles/sudoku6_labelled.csv     # labelled: reports accuracy

The checkpoint says what it solves (the data module saves its puzzle kind). The options are generated from
`SolveRequest` (what to solve, where the answers go) and `recursive_reasoning.inference.TestTimeOptions` (the
test-time compute), so `rr solve --help` and the checks are those of the code.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentParser

from datamodules.kinds import Puzzle, PuzzleKind
from datamodules.kinds.drawing import write_png
from recursive_reasoning.core.files import atomic_write
from recursive_reasoning.inference import Solution, TestTimeOptions, solve_ensemble
from recursive_reasoning.loading import load_trained
from recursive_reasoning.module import RecursiveReasoner
from recursive_reasoning.signature_cli import add_signature, signature_parser

__all__ = ["SolveRequest", "build_parser", "load_ensemble", "load_solver", "main", "solve_puzzles", "write_trace"]

def load_solver(path: str | Path, device: str = "cpu") -> tuple[RecursiveReasoner, PuzzleKind]:
    """The trained model (in eval mode) and its puzzle kind from an `rr` checkpoint (`loading.load_trained`)."""
    return load_trained(path, RecursiveReasoner, device)


def solve_puzzles(
    models: RecursiveReasoner | list[RecursiveReasoner],
    fmt: PuzzleKind,
    puzzles: list[Puzzle],
    options: TestTimeOptions,
    batch_size: int = 64,
) -> list[tuple[Puzzle, Solution, int]]:
    """Solve puzzles in batches (several models vote together as an ensemble); returns (puzzle, the batch's
    solution, index of the puzzle in it) per puzzle."""
    models = models if isinstance(models, list) else [models]
    first = models[0]
    results = []
    for start in range(0, len(puzzles), batch_size):
        chunk = puzzles[start : start + batch_size]
        batch = {
            "inputs": torch.from_numpy(np.stack([p.inputs for p in chunk]).astype(np.int64)).to(first.device),
            "puzzle_ids": torch.tensor([p.puzzle_id for p in chunk], dtype=torch.long, device=first.device),
        }
        if batch["inputs"].shape[1] != first.net.seq_len:
            raise ValueError(
                f"the puzzles have {batch['inputs'].shape[1]} cells but the model was trained on {first.net.seq_len}"
            )
        members = [(m.net, m.strategy, m.progress()) for m in models]
        solution = solve_ensemble(members, batch, options, fmt)
        results.extend((p, solution, i) for i, p in enumerate(chunk))
    return results


def load_ensemble(paths: list[str], device: str = "cpu") -> tuple[list[RecursiveReasoner], PuzzleKind]:
    """Several checkpoints of the same task (e.g. `LateCheckpoints`), checked to solve the same puzzles."""
    loaded = [load_solver(path, device) for path in paths]
    fmt = loaded[0][1]
    for path, (model, other) in zip(paths[1:], loaded[1:]):
        if other.describe() != fmt.describe() or model.net.seq_len != loaded[0][0].net.seq_len:
            raise ValueError(f"{path} solves {other.describe()}, but {paths[0]} solves {fmt.describe()}")
    return [model for model, _ in loaded], fmt


def record(
    fmt: PuzzleKind, puzzle: Puzzle, solution: Solution, index: int, options: TestTimeOptions, members: int = 1
) -> dict:
    """The answer and its signals as plain data (the JSON / JSONL / CSV form): the puzzle echoed and the answer as
    compact strings `rr solve --puzzle` reads back, integer step counts (summed over the puzzle's trajectories)."""
    answer = solution.predictions[index].cpu().numpy()
    passes = None if solution.passes_checker is None else bool(solution.passes_checker[index])
    confidence = float(solution.confidence[index])
    trajectories = members * options.copies * options.samples
    out: dict[str, Any] = {
        "puzzle": puzzle.name,
        "input": fmt.compact(puzzle.inputs),
        "answer": fmt.compact(answer),
        "passes_checker": passes,
        "confidence": None if math.isnan(confidence) else round(confidence, 4),
        "settled": bool(solution.settled[index]),
        "steps": int(round(float(solution.steps[index]) * trajectories)),
        "trajectories": trajectories,
        "agreement": round(float(solution.agreement[index]), 4),
        "options": options.label() + (f" ensemble={members}" if members > 1 else ""),
    }
    if not torch.equal(solution.label_free[index], solution.predictions[index]):
        out["label_free_answer"] = fmt.compact(solution.label_free[index].cpu().numpy())
    if puzzle.labels is not None:
        labels = puzzle.labels
        valid = labels != 0
        out["correct"] = bool((answer[valid] == labels[valid]).all())
    return out


def write_trace(path: str | Path, fmt: PuzzleKind, puzzle: Puzzle, solution: Solution, index: int) -> Path:
    """A PNG of the input and the decoded answer after every step, changed cells marked."""
    answers, halt = solution.trace
    passes = solution.passes_checker
    verdict = "" if passes is None else (" - passes the rules" if bool(passes[index]) else " - breaks the rules")
    strip = fmt.trace(puzzle.inputs, answers[:, index].cpu().numpy(), halt[:, index].cpu().numpy(),
                      title=f"{puzzle.name}{verdict}")
    return write_png(path, strip)


def _print_human(item: dict, answer: str, label_free: str | None) -> None:
    """The text form of one answer: its grid (pretty, not compact) and its signals."""
    print(f"puzzle: {item['puzzle']}")
    print(answer)
    checker = {None: "no checker for this puzzle", True: "passes", False: "fails"}[item["passes_checker"]]
    print(f"rule checker: {checker}")
    confidence = "n/a (no Q head)" if item["confidence"] is None else f"{item['confidence']:.3f}"
    print(f"confidence sigmoid(q_halt): {confidence}")
    over = f" over {item['trajectories']} trajectories" if item["trajectories"] > 1 else ""
    print(f"settled: {'yes' if item['settled'] else 'no'}   steps used: {item['steps']}{over}   "
          f"agreement: {item['agreement']:.2f}   options: {item['options']}")
    if label_free is not None:
        print("label-free vote (before the rule checker):")
        print(label_free)
    if "correct" in item:
        print(f"correct: {'yes' if item['correct'] else 'no'}")


def accuracy(rows: list[dict]) -> str | None:
    """'accuracy: k/n puzzles exactly correct (p%)' over the rows with known answers; None when none has one."""
    known = [row["correct"] for row in rows if "correct" in row]
    if not known:
        return None
    return f"accuracy: {sum(known)}/{len(known)} puzzles exactly correct ({100 * sum(known) / len(known):.1f}%)"


OUTPUT_SUFFIXES = (".jsonl", ".csv")


def _write_rows(path: Path, rows: list[dict]) -> None:
    """Every answer as JSON lines or CSV rows, written atomically (a failed write leaves no half file)."""
    if path.suffix == ".csv":
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
        writer.writeheader()
        writer.writerows(rows)
        data = text.getvalue()
    else:
        data = "".join(json.dumps(row) + "\n" for row in rows)
    try:
        atomic_write(path, lambda handle: handle.write(data.encode()))
    except OSError as err:
        cause = err.__cause__ if isinstance(err.__cause__, OSError) else err
        raise ValueError(f"could not write --output {path} ({cause.strerror or cause}); choose another path") from None


@dataclass
class SolveRequest:
    """What `rr solve` solves and where the answers go (the test-time compute is `TestTimeOptions`).

    Args:
        ckpt_path: Checkpoints written by rr fit; several vote together as an ensemble.
        puzzle: One puzzle as text (Sudoku string or printed grid, maze text, ARC task JSON).
        file: A file of puzzles (one per line, Sudoku grids as printed; mazes separated by blank lines; a CSV with a
            puzzle[,solution] header; ARC JSON); .gz is read too.
        trace: Write a PNG of the answer after every step (one file per puzzle; .png is added when the name has no
            suffix).
        json: Print JSON instead of text.
        output: Write every answer and its signals to a .jsonl or .csv file.
        force: Overwrite an existing --output file.
        device: Torch device, e.g. cpu or cuda.
        batch_size: Puzzles per forward pass.
    """

    ckpt_path: list[str]
    puzzle: str | None = None
    file: str | None = None
    trace: str | None = None
    json: bool = False
    output: str | None = None
    force: bool = False
    device: str = "cpu"
    batch_size: int = 64

    def __post_init__(self) -> None:
        if (self.puzzle is None) == (self.file is None):
            given = "both --puzzle and --file" if self.puzzle is not None else "neither --puzzle nor --file"
            raise ValueError(f"{given} given; give one puzzle with --puzzle TEXT or a file of them with --file PATH")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def build_parser() -> ArgumentParser:
    """The `rr solve` parser: the fields of `SolveRequest` and of `TestTimeOptions` as options."""
    parser = signature_parser("rr solve", "Solve puzzles with a trained rr checkpoint.")
    add_signature(parser, SolveRequest)
    add_signature(parser, TestTimeOptions)
    return parser


def parse_arguments(argv: list[str] | None) -> tuple[SolveRequest, TestTimeOptions]:
    """The request and the test-time options of a command line; a type error exits with the usage (status 2), a
    value out of range raises ValueError naming the option."""
    values = build_parser().parse_args(argv).as_dict()

    def of(cls: type) -> dict[str, Any]:
        return {field.name: values[field.name] for field in fields(cls)}

    return SolveRequest(**of(SolveRequest)), TestTimeOptions(**of(TestTimeOptions))


def check_device(device: str) -> None:
    """Refuse a device this machine does not have, before a checkpoint is blamed for it."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no usable CUDA GPU (torch.cuda.is_available() is "
                         "False); use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"cuda:0 to cuda:{torch.cuda.device_count() - 1}; pick one of them")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine; use --device cpu")


def _check_writable(flag: str, path: Path) -> None:
    """Refuse a path a file cannot be written to (an existing read-only file, or no writable folder above it)."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path}: permission denied (the file is read-only); choose another path")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: cannot create it ({folder} is not a writable folder); choose another path")


def check_outputs(request: SolveRequest, options: TestTimeOptions) -> SolveRequest:
    """Refuse options that would be silently ignored or would fail after the model ran; returns the request with
    --trace given its .png."""
    if options.samples > 1 and options.noise == 0:
        raise ValueError(f"--samples {options.samples} without --noise runs {options.samples} identical trajectories; "
                         "add latent noise (e.g. --noise 0.1) or drop --samples")
    if request.output:
        output = Path(request.output)
        if output.suffix not in OUTPUT_SUFFIXES:
            raise ValueError(f"--output {output}: unknown suffix {output.suffix or '(none)'!r}; name it .jsonl "
                             "(JSON lines) or .csv")
        if output.is_dir():
            raise ValueError(f"--output {output} is a directory; give a file name ending .jsonl or .csv")
        if output.exists() and not request.force:
            raise ValueError(f"--output {output} already exists; pass --force to overwrite it")
        _check_writable("--output", output)
    if request.trace:
        trace = Path(request.trace)
        if trace.suffix == "":
            request = replace(request, trace=str(trace.with_name(trace.name + ".png")))
        elif trace.suffix.lower() != ".png":
            raise ValueError(f"--trace {trace}: traces are PNG images; name it .png (e.g. {trace.with_suffix('.png')})")
        _check_writable("--trace", Path(request.trace))
    return request


def _solve(request: SolveRequest, options: TestTimeOptions) -> tuple[list[dict], list[tuple[str, str | None]]]:
    """Check the options, read the puzzles, run the model, write traces and --output; returns the rows and the
    pretty (answer, label-free answer) texts of the text output."""
    check_device(request.device)
    models, fmt = load_ensemble(request.ckpt_path, request.device)
    puzzles = fmt.read_file(request.file) if request.file else fmt.parse(request.puzzle or "")
    results = solve_puzzles(models, fmt, puzzles, options, request.batch_size)
    rows = [record(fmt, p, s, i, options, len(models)) for p, s, i in results]
    pretty = []
    for row, (p, s, i) in zip(rows, results):
        changed = "label_free_answer" in row
        pretty.append((fmt.text(p.inputs, s.predictions[i].cpu().numpy()),
                       fmt.text(p.inputs, s.label_free[i].cpu().numpy()) if changed else None))
    if request.trace:
        trace = Path(request.trace)
        for n, (p, s, i) in enumerate(results):
            target = trace if len(results) == 1 else trace.with_name(f"{trace.stem}-{n}{trace.suffix}")
            rows[n]["trace"] = str(write_trace(target, fmt, p, s, i))
    if request.output:
        _write_rows(Path(request.output), rows)
    return rows, pretty


def _report(request: SolveRequest, rows: list[dict], pretty: list[tuple[str, str | None]]) -> None:
    """Print the answers (text or JSON), what was written, and the accuracy when the puzzles had answers."""
    score = accuracy(rows)
    if request.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
    elif not request.output or len(rows) <= 10:
        for row, (answer, label_free) in zip(rows, pretty):
            _print_human(row, answer, label_free)
            if "trace" in row:
                print(f"trace: {row['trace']}")
            print()
    if request.output:
        solved = sum(bool(r["passes_checker"]) for r in rows if r["passes_checker"] is not None)
        print(f"wrote {len(rows)} answers to {request.output} ({solved} pass the rule checker)")
    if score is not None:
        print(score, file=sys.stderr if request.json else sys.stdout)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rr solve`; returns the exit status (errors are printed, not raised)."""
    try:
        request, options = parse_arguments(argv)
        request = check_outputs(request, options)
        rows, pretty = _solve(request, options)
    except PermissionError as err:
        print(f"rr solve: error: cannot access {err.filename}: permission denied; fix its permissions or choose "
              "another path", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"rr solve: error: {err}", file=sys.stderr)
        return 2
    try:
        _report(request, rows, pretty)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `rr solve ... | head -1`: the reader has gone, so stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0
