"""Train every built-in strategy on the same generated Sudoku task with the same optimiser-step budget.

Reports held-out exact accuracy, mean segments used, wall-clock and peak memory per strategy and seed, as a markdown
table. Each (strategy, seed) runs in its own process, so peak memory is that run's own. Same network width, data,
batch, learning rate and steps for all; only the recursion method differs.

    python benchmarks/strategy_bakeoff.py --size 6 --steps 600 --seeds 0 1 2
    python benchmarks/strategy_bakeoff.py --strategies TRM CGAR --size 6 --steps 1500
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import lightning as L
import torch

from datamodules import GeneratedSudoku
from recursive_reasoning.callbacks import EMA
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.network import NetworkConfig
from strategies import CGAR, HRM, RSM, TRM, RecursionStrategy


def strategies(supervision_steps: int) -> dict[str, Callable[[], tuple[RecursionStrategy, NetworkConfig]]]:
    """Each method at the demo's small scale: D 64, 2 layers per module, MLP token mixing."""
    shared = NetworkConfig(hidden_size=64, num_heads=4, num_layers=2, mixer="mlp", positions="none", puzzle_emb_len=0)
    separate = NetworkConfig(hidden_size=64, num_heads=4, num_layers=2, shared=False, mixer="mlp", positions="none",
                             puzzle_emb_len=0)
    methods = {
        "TRM": lambda: (TRM(cycles=2, latent_steps=2, supervision_steps=supervision_steps), shared),
        "HRM": lambda: (HRM(cycles=2, latent_steps=2, supervision_steps=supervision_steps), separate),
        "CGAR": lambda: (CGAR(cycles=2, latent_steps=2, supervision_steps=supervision_steps,
                              stage_depths=[(1, 1), (1, 2), (2, 2)]), shared),
    }
    # RSM's Sudoku recipe grows to (H, L) = (8, 12), far costlier per step than the others here; at this scale it
    # grows H 2 -> 3 -> 4 at L 2 (module calls per step comparable to the other methods' at the same budget).
    methods["RSM"] = lambda: (RSM(h_schedule=[(0.0, 2), (0.4, 3), (0.8, 4)], l_schedule=[(0.0, 2)]), shared)
    return methods


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(build: Callable, size: int, steps: int, seed: int, batch: int, lr: float) -> dict[str, float]:
    """Train one strategy for `steps` optimiser steps and test it on held-out puzzles."""
    L.seed_everything(seed, verbose=False)
    strategy, network = build()
    data = GeneratedSudoku(size=size, train_size=20000 if size > 4 else 2000, val_size=500,
                           test_size=1000 if size > 4 else 500, batch_size=batch, eval_batch_size=500, seed=0)
    data.prepare_data()  # generate (or load the cached puzzles) before the clock starts
    data.setup("fit")
    optim = OptimConfig(lr=lr, weight_decay=0.1, warmup_steps=min(100, steps // 5))
    model = RecursiveReasoner(strategy, network, optim,
                              vocab_size=data.vocab_size, seq_len=data.seq_len, num_puzzle_ids=data.num_puzzle_ids)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision="32-true", max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0,
                        callbacks=[EMA(decay=0.99)])
    start = time.perf_counter()
    trainer.fit(model, data)
    train_seconds = time.perf_counter() - start
    result = trainer.test(model, data, verbose=False)[0]
    return {"exact": result["test/exact_accuracy"], "steps": result["test/steps"], "seconds": train_seconds,
            "peak_mib": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="*", default=None, help="subset to run (default: all built-in)")
    parser.add_argument("--size", type=int, default=6, help="Sudoku side: 4, 6 or 9")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per run (the shared budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--supervision-steps", type=int, default=8)
    parser.add_argument("--single", action="store_true", help="internal: run one strategy and seed, print JSON")
    args = parser.parse_args()
    methods = strategies(args.supervision_steps)
    chosen = args.strategies or list(methods)
    if args.single:
        result = run(methods[chosen[0]], args.size, args.steps, args.seeds[0], args.batch, args.lr)
        print("RESULT " + json.dumps(result))
        return
    rows = []
    for name in chosen:
        runs = []
        for seed in args.seeds:
            command = [sys.executable, __file__, "--single", "--strategies", name, "--seeds", str(seed),
                       "--size", str(args.size), "--steps", str(args.steps), "--batch", str(args.batch),
                       "--lr", str(args.lr), "--supervision-steps", str(args.supervision_steps)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            runs.append(json.loads(output.split("RESULT ", 1)[1]))
        exact = [r["exact"] for r in runs]
        spread = statistics.stdev(exact) if len(exact) > 1 else 0.0
        rows.append(
            f"| {name} | {100 * statistics.mean(exact):.1f} ± {100 * spread:.1f} | "
            f"{', '.join(f'{100 * e:.1f}' for e in exact)} | {statistics.mean(r['steps'] for r in runs):.1f} | "
            f"{statistics.mean(r['seconds'] for r in runs):.0f} | {max(r['peak_mib'] for r in runs):.0f} |"
        )
        print(rows[-1], flush=True)
    print(f"\n{args.size}x{args.size} generated Sudoku, {args.steps} steps, batch {args.batch}, lr {args.lr}, "
          f"seeds {args.seeds}, {torch.get_num_threads()} threads\n")
    print("| strategy | test exact % (mean ± sd) | per seed | mean segments | train s | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
