"""Held-out exact accuracy and cost of the test-time options on a trained checkpoint.

    python benchmarks/test_time.py --ckpt_path runs/demo_sudoku/latest/checkpoints/last.ckpt
    python benchmarks/test_time.py --ckpt_path last.ckpt --limit 200 --device cuda
    python benchmarks/test_time.py --ckpt_path runs/demo_sudoku/latest/checkpoints/last.ckpt \
        --ensemble runs/demo_sudoku/latest/checkpoints/late-step*.ckpt

The test split is rebuilt from the data module recorded in the checkpoint. Each row runs the whole split under one
`TestTimeOptions` setting and reports exact accuracy of the selected answers (with the label-free vote beside a
rule-checker selection), mean steps used per trajectory, reasoning steps run per puzzle (the compute bill) and wall
seconds. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

from recursive_reasoning.inference import TestTimeOptions, solve_ensemble
from recursive_reasoning.solve import load_ensemble, load_solver

DEPTH_X2 = {"depth": 2}  # resolved against the trained depth
SETTINGS: list[tuple[str, dict]] = [
    ("single pass", {}),
    ("early exit: q_halt > 0", {"early_exit": "halt"}),
    ("early exit: settled for 2 steps", {"early_exit": "settled", "settle_k": 2}),
    ("depth x2", DEPTH_X2),
    ("depth x2, early exit: settled for 2 steps", {**DEPTH_X2, "early_exit": "settled", "settle_k": 2}),
    ("vote over 8 symmetric copies", {"copies": 8}),
    ("8 copies, vote among q-confident", {"copies": 8, "selection": "confident_vote"}),
    ("8 copies, highest q_halt", {"copies": 8, "selection": "max_q"}),
    ("8 copies, rule checker (+ label-free vote)", {"copies": 8, "selection": "checker"}),
    ("latent noise 0.3, 8 samples, vote", {"samples": 8, "noise": 0.3}),
    ("latent noise 0.3, 8 samples, highest q_halt", {"samples": 8, "noise": 0.3, "selection": "max_q"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--limit", type=int, default=None, help="use the first N test puzzles")
    parser.add_argument("--ensemble", nargs="*", default=[],
                        help="further checkpoints (e.g. LateCheckpoints' late-step*.ckpt): adds ensemble rows")
    args = parser.parse_args()

    model, fmt = load_solver(args.ckpt_path, args.device)
    hparams = torch.load(args.ckpt_path, map_location="cpu", weights_only=True)["datamodule_hyper_parameters"]
    module_name, _, class_name = hparams["_class_path"].rpartition(".")
    datamodule = getattr(importlib.import_module(module_name), class_name)(
        **{k: v for k, v in hparams.items() if not k.startswith("_")})
    datamodule.setup("test")
    test = datamodule.datasets["test"]
    count = len(test) if args.limit is None else min(args.limit, len(test))
    batch = test.__getitems__(list(range(count)))
    inputs, labels = batch["inputs"], batch["labels"]
    trained = model.strategy.supervision_steps if model.strategy.has_halt_head else model.strategy.h_test

    print(f"{count} test puzzles of {class_name}({', '.join(f'{k}={hparams[k]}' for k in ('size', 'side') if k in hparams)}),"
          f" {type(model.strategy).__name__}, trained depth {trained} steps, device {args.device}\n")
    print("| test-time setting | exact accuracy | label-free vote | steps used | steps run / puzzle | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = [(name, setting, [model]) for name, setting in SETTINGS]
    if args.ensemble:
        members, _ = load_ensemble(args.ensemble, args.device)
        k = len(members)
        rows += [(f"ensemble of {k} late checkpoints, vote", {}, members),
                 (f"ensemble of {k} late checkpoints x 8 copies, vote", {"copies": 8}, members)]
    for name, setting, models in rows:
        setting = dict(setting)
        if "depth" in setting:
            setting["steps"] = trained * setting.pop("depth")
        options = TestTimeOptions(**setting)
        if not model.strategy.has_halt_head and (options.early_exit == "halt" or "q" in options.selection):
            continue
        exact = free = steps = run = 0.0
        start = time.perf_counter()
        for first in range(0, count, args.batch_size):
            batch = {"inputs": inputs[first : first + args.batch_size].to(model.device),
                     "puzzle_ids": torch.zeros(min(args.batch_size, count - first), dtype=torch.long,
                                               device=model.device)}
            target = labels[first : first + args.batch_size].to(model.device)
            members = [(m.net, m.strategy, m.progress()) for m in models]
            solution = solve_ensemble(members, batch, options, fmt)
            exact += (solution.predictions == target).all(-1).sum().item()
            free += (solution.label_free == target).all(-1).sum().item()
            steps += solution.steps.sum().item()
            run += solution.steps_run
        seconds = time.perf_counter() - start
        label_free = f"{100 * free / count:.1f}%" if options.selection == "checker" else "-"
        print(f"| {name} | {100 * exact / count:.1f}% | {label_free} | {steps / count:.2f} | {run / count:.1f} | "
              f"{seconds:.1f} |")


if __name__ == "__main__":
    main()
