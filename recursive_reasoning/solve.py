"""`rr solve`: hand a trained model one puzzle (or a file of them) and see its answer, its signals and its reasoning.

    rr solve --ckpt_path runs/demo_sudoku/latest/checkpoints/last.ckpt --puzzle "1.3...5.2..." --trace trace.png
    rr solve --ckpt_path last.ckpt --file examples/puzzles/maze30.txt --output answers.jsonl --copies 8
    rr solve --ckpt_path last.ckpt --file examples/puzzles/arc_mirror.json --json
    rr solve --ckpt_path runs/demo_sudoku/latest/checkpoints/late-step*.ckpt --file puzzles.txt --output a.csv
    rr solve --ckpt_path last.ckpt --file examples/puzzles/sudoku6_labelled.csv     # labelled: reports accuracy

The checkpoint says what it solves (the data module saves its puzzle format); the test-time options are those of
`recursive_reasoning.inference.TestTimeOptions`.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import math
import os
import pickle
import sys
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from datamodules.kinds import Puzzle, PuzzleKind, kind_from_description
from recursive_reasoning.checkpoint_io import verify_checkpoint
from recursive_reasoning.core.files import atomic_write
from recursive_reasoning.inference import (
    EarlyExit,
    Perturbations,
    Selection,
    Solution,
    TestTimeOptions,
    solve_ensemble,
)
from recursive_reasoning.module import RecursiveReasoner

__all__ = ["load_ensemble", "load_solver", "main", "solve_puzzles", "write_trace"]


def load_solver(path: str | Path, device: str = "cpu") -> tuple[RecursiveReasoner, PuzzleKind]:
    """The trained model (in eval mode) and its puzzle format from an `rr` checkpoint.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not an `rr` checkpoint or does not say what puzzles it solves.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path} is not an rr checkpoint (no state_dict and hyper_parameters); train one with rr fit")
    verify_checkpoint(checkpoint, path)
    description, puzzle_map = None, None
    for value in checkpoint.values():
        if isinstance(value, dict) and "puzzle_format" in value:
            description = value["puzzle_format"]
            if "puzzle_map" in value:
                from datamodules.arc import PuzzleIdMap

                puzzle_map = PuzzleIdMap.from_state_dict(value["puzzle_map"])
    if description is None:
        description = _format_from_datamodule_hparams(checkpoint.get("datamodule_hyper_parameters"))
    if description is None:
        raise ValueError(
            f"{path} does not say which puzzles it solves (no data-module state with a puzzle format); it was "
            "written by an older rr, or without a data module. Retrain, or continue it for one step with rr fit"
        )
    model = RecursiveReasoner(**checkpoint["hyper_parameters"])
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval(), kind_from_description(description, puzzle_map=puzzle_map)


def _format_from_datamodule_hparams(hparams: Any) -> dict[str, Any] | None:
    """The puzzle format of the data module LightningCLI recorded (its class path and arguments), if it has one."""
    if not isinstance(hparams, dict) or "_class_path" not in hparams:
        return None
    module_name, _, class_name = str(hparams["_class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        datamodule = cls(**{k: v for k, v in hparams.items() if not k.startswith("_")})
    except (ImportError, AttributeError, TypeError, ValueError):  # then the caller's clear error applies
        return None
    fmt = datamodule.puzzle_format() if hasattr(datamodule, "puzzle_format") else None
    return None if fmt is None else fmt.describe()


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
    from datamodules.kinds.drawing import filmstrip, write_png

    answers, halt = solution.trace
    steps = answers[:, index].cpu().numpy()
    q = halt[:, index].cpu().numpy()
    frames = [fmt.frame(puzzle.inputs, puzzle.inputs, None)]
    captions = ["input"]
    previous = None
    for s, tokens in enumerate(steps):
        frames.append(fmt.frame(puzzle.inputs, tokens, previous))
        captions.append(f"step {s + 1}" + ("" if math.isnan(q[s]) else f" q {q[s]:.2f}"))
        previous = tokens
    passes = solution.passes_checker
    verdict = "" if passes is None else (" - passes the rules" if bool(passes[index]) else " - breaks the rules")
    return write_png(path, filmstrip(frames, captions, title=f"{puzzle.name}{verdict}", per_row=9))


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


def _positive(text: str) -> int:
    """argparse type of counts (batch size, steps, copies, samples): a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


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


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse options that would be silently ignored or would fail after the model ran; give --trace its .png."""
    if args.samples > 1 and args.noise == 0:
        raise ValueError(f"--samples {args.samples} without --noise runs {args.samples} identical trajectories; "
                         "add latent noise (e.g. --noise 0.1) or drop --samples")
    if args.output:
        output = Path(args.output)
        if output.suffix not in OUTPUT_SUFFIXES:
            raise ValueError(f"--output {output}: unknown suffix {output.suffix or '(none)'!r}; name it .jsonl "
                             "(JSON lines) or .csv")
        if output.is_dir():
            raise ValueError(f"--output {output} is a directory; give a file name ending .jsonl or .csv")
        if output.exists() and not args.force:
            raise ValueError(f"--output {output} already exists; pass --force to overwrite it")
        _check_writable("--output", output)
    if args.trace:
        trace = Path(args.trace)
        if trace.suffix == "":
            args.trace = str(trace.with_name(trace.name + ".png"))
        elif trace.suffix.lower() != ".png":
            raise ValueError(f"--trace {trace}: traces are PNG images; name it .png (e.g. {trace.with_suffix('.png')})")
        _check_writable("--trace", Path(args.trace))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rr solve", description="Solve puzzles with a trained rr checkpoint.")
    parser.add_argument("--ckpt_path", required=True, nargs="+",
                        help="checkpoint written by rr fit; several vote together as an ensemble")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--puzzle", help="one puzzle as text (Sudoku string or printed grid, maze text, ARC task JSON)")
    source.add_argument("--file", help="a file of puzzles (one per line, Sudoku grids as printed; mazes separated by "
                        "blank lines; a CSV with a puzzle[,solution] header; ARC JSON); .gz is read too")
    parser.add_argument("--trace", help="write a PNG of the answer after every step (one file per puzzle; .png "
                        "is added when the name has no suffix)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--output", help="write every answer and its signals to a .jsonl or .csv file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output file")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--batch_size", type=_positive, default=64)
    defaults = TestTimeOptions()
    parser.add_argument("--steps", type=_positive, default=None, help="reasoning steps (default: as trained)")
    parser.add_argument("--early_exit", choices=get_args(EarlyExit), default=defaults.early_exit)
    parser.add_argument("--settle_k", type=_positive, default=defaults.settle_k)
    parser.add_argument("--copies", type=_positive, default=defaults.copies, help="transformed copies to vote over")
    parser.add_argument("--perturbations", choices=get_args(Perturbations), default=defaults.perturbations,
                        help="the copies: random symmetries, or Augmented HRM's (Sudoku digit shifts, maze S/G swap)")
    parser.add_argument("--samples", type=_positive, default=defaults.samples,
                        help="trajectories per copy (needs --noise, or they are identical)")
    parser.add_argument("--noise", type=float, default=defaults.noise, help="latent noise sigma")
    parser.add_argument("--selection", choices=get_args(Selection), default=defaults.selection)
    parser.add_argument("--confidence", type=float, default=defaults.confidence,
                        help="confident_vote: sigmoid(q_halt) threshold (default: the strategy's own halting rule)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    return parser


def _solve(args: argparse.Namespace) -> tuple[list[dict], list[tuple[str, str | None]]]:
    """Check the options, read the puzzles, run the model, write traces and --output; returns the rows and the
    pretty (answer, label-free answer) texts of the text output."""
    options = TestTimeOptions(steps=args.steps, early_exit=args.early_exit, settle_k=args.settle_k,
                              copies=args.copies, perturbations=args.perturbations,
                              samples=args.samples, noise=args.noise,
                              selection=args.selection, confidence=args.confidence, seed=args.seed)
    check_outputs(args)
    check_device(args.device)
    models, fmt = load_ensemble(args.ckpt_path, args.device)
    puzzles = fmt.read_file(args.file) if args.file else fmt.parse(args.puzzle)
    results = solve_puzzles(models, fmt, puzzles, options, args.batch_size)
    rows = [record(fmt, p, s, i, options, len(models)) for p, s, i in results]
    pretty = []
    for row, (p, s, i) in zip(rows, results):
        changed = "label_free_answer" in row
        pretty.append((fmt.text(p.inputs, s.predictions[i].cpu().numpy()),
                       fmt.text(p.inputs, s.label_free[i].cpu().numpy()) if changed else None))
    if args.trace:
        trace = Path(args.trace)
        for n, (p, s, i) in enumerate(results):
            target = trace if len(results) == 1 else trace.with_name(f"{trace.stem}-{n}{trace.suffix}")
            rows[n]["trace"] = str(write_trace(target, fmt, p, s, i))
    if args.output:
        _write_rows(Path(args.output), rows)
    return rows, pretty


def _report(args: argparse.Namespace, rows: list[dict], pretty: list[tuple[str, str | None]]) -> None:
    """Print the answers (text or JSON), what was written, and the accuracy when the puzzles had answers."""
    score = accuracy(rows)
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
    elif not args.output or len(rows) <= 10:
        for row, (answer, label_free) in zip(rows, pretty):
            _print_human(row, answer, label_free)
            if "trace" in row:
                print(f"trace: {row['trace']}")
            print()
    if args.output:
        solved = sum(bool(r["passes_checker"]) for r in rows if r["passes_checker"] is not None)
        print(f"wrote {len(rows)} answers to {args.output} ({solved} pass the rule checker)")
    if score is not None:
        print(score, file=sys.stderr if args.json else sys.stdout)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rr solve`; returns the exit status (errors are printed, not raised)."""
    args = build_parser().parse_args(argv)
    try:
        rows, pretty = _solve(args)
    except PermissionError as err:
        print(f"rr solve: error: cannot access {err.filename}: permission denied; fix its permissions or choose "
              "another path", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as err:
        print(f"rr solve: error: {err}", file=sys.stderr)
        return 2
    try:
        _report(args, rows, pretty)
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `rr solve ... | head -1`: the reader has gone, so stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 0
