"""Cost of the ARC data pipeline at paper scale: planning the augmentations and puzzle ids, rendering training
batches, and scoring a whole evaluation split with the voting evaluator.

    python benchmarks/arc_data.py --data-dir ../shared/data
    python benchmarks/arc_data.py --data-dir data --train-sets arc-agi-2/training conceptarc/corpus \
        --eval-set arc-agi-2/evaluation

Prints a markdown table: ids, examples per split, seconds to plan, training examples rendered per second (one process),
evaluator seconds (update + compute, rendering excluded) for the full test split (half of the copies right), and peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from datamodules import ARC


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--train-sets", nargs="+", default=["arc-agi-1/training", "conceptarc/corpus"])
    parser.add_argument("--eval-set", default="arc-agi-1/evaluation")
    parser.add_argument("--augmentations", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=768)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()

    start = time.perf_counter()
    dm = ARC(data_dir=args.data_dir, train_sets=args.train_sets, eval_set=args.eval_set,
             augmentations=args.augmentations, batch_size=args.batch_size)
    ids = dm.num_puzzle_ids
    dm.setup()
    plan_s = time.perf_counter() - start

    train = dm.datasets["train"]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(args.batches):
        train.__getitems__(rng.integers(0, len(train), args.batch_size).tolist())
    render = args.batches * args.batch_size / (time.perf_counter() - start)

    test = dm.datasets["test"]
    evaluator = dm.evaluator("test")
    evaluate_s = 0.0
    for first in range(0, len(test), 4096):
        batch = test.__getitems__(list(range(first, min(first + 4096, len(test)))))
        predictions = batch["labels"].clamp(min=0)
        predictions[::2, 0] = 0  # half of the copies are wrong (an empty crop)
        start = time.perf_counter()
        evaluator.update(batch, predictions, torch.randn(len(predictions)))
        evaluate_s += time.perf_counter() - start
    start = time.perf_counter()
    scores = evaluator.compute()
    evaluate_s += time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    print("| sets | ids | train / val / test examples | plan s | train examples/s | evaluate test s | pass@1 | "
          "peak GB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    sizes = " / ".join(f"{len(dm.datasets[s]):,}" for s in ("train", "val", "test"))
    print(f"| {' + '.join(args.train_sets)} -> {args.eval_set} | {ids:,} | {sizes} | {plan_s:.1f} | {render:,.0f} | "
          f"{evaluate_s:.1f} | {float(scores['pass@1']):.3f} | {peak_gb:.2f} |")


if __name__ == "__main__":
    main()
