"""`rr solve`: hand a trained model one puzzle (or a file of them) and see its answer, its signals and its reasoning.

    rr solve --ckpt_path runs/demo_sudoku/checkpoints/last.ckpt --puzzle "1.3...5.2..." --trace trace.png
    rr solve --ckpt_path last.ckpt --file mazes.txt --output answers.jsonl --copies 8
    rr solve --ckpt_path last.ckpt --file task.json --json
    rr solve --ckpt_path runs/demo_sudoku/checkpoints/late-step*.ckpt --file puzzles.txt --output answers.csv

The checkpoint says what it solves (the data module saves its puzzle format); the test-time options are those of
`recursive_reasoning.inference.TestTimeOptions`.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import pickle
import sys
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from datamodules.formats import Puzzle, PuzzleFormat, format_from_description
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


def load_solver(path: str | Path, device: str = "cpu") -> tuple[RecursiveReasoner, PuzzleFormat]:
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
    return model.to(device).eval(), format_from_description(description, puzzle_map)


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
    fmt: PuzzleFormat,
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


def load_ensemble(paths: list[str], device: str = "cpu") -> tuple[list[RecursiveReasoner], PuzzleFormat]:
    """Several checkpoints of the same task (e.g. `LateCheckpoints`), checked to solve the same puzzles."""
    loaded = [load_solver(path, device) for path in paths]
    fmt = loaded[0][1]
    for path, (model, other) in zip(paths[1:], loaded[1:]):
        if other.describe() != fmt.describe() or model.net.seq_len != loaded[0][0].net.seq_len:
            raise ValueError(f"{path} solves {other.describe()}, but {paths[0]} solves {fmt.describe()}")
    return [model for model, _ in loaded], fmt


def record(
    fmt: PuzzleFormat, puzzle: Puzzle, solution: Solution, index: int, options: TestTimeOptions, members: int = 1
) -> dict:
    """The answer and its signals as plain data (the JSON / JSONL form)."""
    answer = solution.predictions[index].cpu().numpy()
    passes = None if solution.passes_checker is None else bool(solution.passes_checker[index])
    confidence = float(solution.confidence[index])
    out: dict[str, Any] = {
        "puzzle": puzzle.name,
        "answer": fmt.text(puzzle.inputs, answer),
        "passes_checker": passes,
        "confidence": None if math.isnan(confidence) else round(confidence, 4),
        "settled": bool(solution.settled[index]),
        "steps": round(float(solution.steps[index]), 3),
        "agreement": round(float(solution.agreement[index]), 4),
        "options": options.label() + (f" ensemble={members}" if members > 1 else ""),
    }
    if not torch.equal(solution.label_free[index], solution.predictions[index]):
        out["label_free_answer"] = fmt.text(puzzle.inputs, solution.label_free[index].cpu().numpy())
    if puzzle.labels is not None:
        labels = puzzle.labels
        valid = labels != 0
        out["correct"] = bool((answer[valid] == labels[valid]).all())
    return out


def write_trace(path: str | Path, fmt: PuzzleFormat, puzzle: Puzzle, solution: Solution, index: int) -> Path:
    """A PNG of the input and the decoded answer after every step, changed cells marked."""
    from recursive_reasoning.render import filmstrip, write_png

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


def _print_human(item: dict) -> None:
    print(f"puzzle: {item['puzzle']}")
    print(item["answer"])
    checker = {None: "no checker for this puzzle", True: "passes", False: "fails"}[item["passes_checker"]]
    print(f"rule checker: {checker}")
    confidence = "n/a (no Q head)" if item["confidence"] is None else f"{item['confidence']:.3f}"
    print(f"confidence sigmoid(q_halt): {confidence}")
    print(f"settled: {'yes' if item['settled'] else 'no'}   steps used: {item['steps']:g}   "
          f"agreement: {item['agreement']:.2f}   options: {item['options']}")
    if "label_free_answer" in item:
        print("label-free vote (before the rule checker):")
        print(item["label_free_answer"])
    if "correct" in item:
        print(f"correct: {'yes' if item['correct'] else 'no'}")


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        keys = list(dict.fromkeys(k for row in rows for k in row))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rr solve", description="Solve puzzles with a trained rr checkpoint.")
    parser.add_argument("--ckpt_path", required=True, nargs="+",
                        help="checkpoint written by rr fit; several vote together as an ensemble")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--puzzle", help="one puzzle as text (Sudoku string, maze text, ARC task JSON)")
    source.add_argument("--file", help="a file of puzzles (one per line; mazes separated by blank lines; ARC JSON)")
    parser.add_argument("--trace", help="write a PNG of the answer after every step (one file per puzzle)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--output", help="write every answer and its signals to a .jsonl or .csv file")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--batch_size", type=int, default=64)
    defaults = TestTimeOptions()
    parser.add_argument("--steps", type=int, default=None, help="reasoning steps (default: as trained)")
    parser.add_argument("--early_exit", choices=get_args(EarlyExit), default=defaults.early_exit)
    parser.add_argument("--settle_k", type=int, default=defaults.settle_k)
    parser.add_argument("--copies", type=int, default=defaults.copies, help="transformed copies to vote over")
    parser.add_argument("--perturbations", choices=get_args(Perturbations), default=defaults.perturbations,
                        help="the copies: random symmetries, or Augmented HRM's (Sudoku digit shifts, maze S/G swap)")
    parser.add_argument("--samples", type=int, default=defaults.samples, help="trajectories per copy")
    parser.add_argument("--noise", type=float, default=defaults.noise, help="latent noise sigma")
    parser.add_argument("--selection", choices=get_args(Selection), default=defaults.selection)
    parser.add_argument("--confidence", type=float, default=defaults.confidence,
                        help="confident_vote: sigmoid(q_halt) threshold (default: the strategy's own halting rule)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `rr solve`; returns the exit status (errors are printed, not raised)."""
    args = build_parser().parse_args(argv)
    try:
        options = TestTimeOptions(steps=args.steps, early_exit=args.early_exit, settle_k=args.settle_k,
                                  copies=args.copies, perturbations=args.perturbations,
                                  samples=args.samples, noise=args.noise,
                                  selection=args.selection, confidence=args.confidence, seed=args.seed)
        models, fmt = load_ensemble(args.ckpt_path, args.device)
        puzzles = fmt.read_file(args.file) if args.file else fmt.parse(args.puzzle)
        results = solve_puzzles(models, fmt, puzzles, options, args.batch_size)
        rows = [record(fmt, p, s, i, options, len(models)) for p, s, i in results]
        if args.trace:
            trace = Path(args.trace)
            for n, (p, s, i) in enumerate(results):
                target = trace if len(results) == 1 else trace.with_name(f"{trace.stem}-{n}{trace.suffix}")
                rows[n]["trace"] = str(write_trace(target, fmt, p, s, i))
        if args.output:
            _write_rows(Path(args.output), rows)
    except (FileNotFoundError, ValueError) as err:
        print(f"rr solve: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
    elif not args.output or len(rows) <= 10:
        for row in rows:
            _print_human(row)
            if "trace" in row:
                print(f"trace: {row['trace']}")
            print()
    if args.output:
        solved = sum(bool(r["passes_checker"]) for r in rows if r["passes_checker"] is not None)
        print(f"wrote {len(rows)} answers to {args.output} ({solved} pass the rule checker)")
    return 0
