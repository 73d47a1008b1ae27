"""Training and evaluation throughput, peak memory and model FLOP utilisation (MFU) of the recipes.

One training segment is what `RecursiveReasoner` does per training step: refresh the carry, `strategy.run_segment`,
the loss, backward and an optimiser step (with the recipe's gradient clipping). Evaluation is
`RecursiveReasoner.solve`: every example from the initial states through all segments. The batch is fixed synthetic
data (random tokens of the task's vocabulary and length), so only the model's hot path is timed, never data loading.
FLOPs are counted analytically from the layer shapes (`recursive_reasoning.flops.segment_flops`, the counter training
logs as `train/flops`); MFU is the achieved FLOP/s over the best large square matmul measured on the same device and
dtype in the same run. Every configuration runs in its own process, so
its peak memory (CPU: peak RSS; GPU: max allocated) is its own.

    python benchmarks/throughput.py --recipe demo --batch 64
    python benchmarks/throughput.py --recipe trm_sudoku --batch 768 --micro-batch 64 --steps 2 --eval-segments 1
    python benchmarks/throughput.py --recipe demo --compile off on
    python benchmarks/throughput.py --recipe trm_sudoku_att --batch 32 --attention-backend auto math
    python benchmarks/throughput.py --rsm-memory --rsm-depths 2 8 32
    python benchmarks/throughput.py --recipe trm_sudoku --batch 768 --device cuda --precision fp32 bf16 --compile off on
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

from recursive_reasoning.host_memory import keep_freed_memory
from recursive_reasoning.flops import call_flops, segment_flops
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from recursive_reasoning.optim import clip_gradients
from strategies import RSM, Progress, RecursionStrategy

PRESETS = {
    "trm_sudoku": "trm_sudoku.yaml",  # TRM, MLP token mixing, D 512, L 81 (+16 prefix), T 3, n 6, N_sup 16
    "trm_sudoku_att": "trm_sudoku_att.yaml",  # the same with attention + RoPE
    "hrm_sudoku": "hrm_sudoku.yaml",  # HRM, two 4-layer attention modules, H 2, L 2
    "cgar_sudoku": "cgar_sudoku.yaml",
    "rsm_sudoku": "rsm_sudoku.yaml",
    "trm_maze": "trm_maze.yaml",  # TRM attention on 30x30 mazes (900 tokens), T 3, n 4
    "demo": "demo_sudoku.yaml",  # the CPU demo: D 64, 6x6 Sudoku, T 2, n 2, N_sup 8
}
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
COMPILE = {"off": False, "on": True, "segment": "segment"}  # --compile: model.network.compile
COMPILE_NAMES = {value: name for name, value in COMPILE.items()}
# Allocators a configuration's process can run under. glibc returns every large freed buffer to the OS, so each new
# activation is page-faulted in again. "keep" is glibc told to keep freed memory (`host_memory.keep_freed_memory`, the
# `KeepFreedMemory` callback of the CPU configs); the others are preloaded and configured to keep it too.
KEEP = "keep"
ALLOCATORS = {
    "jemalloc": (("libjemalloc.so.2", "libjemalloc.so"), {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"},
                 "apt-get install libjemalloc2"),
    "tcmalloc": (("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"), {"TCMALLOC_RELEASE_RATE": "0"},
                 "apt-get install libtcmalloc-minimal4"),
}
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib", "/usr/lib/aarch64-linux-gnu")


@dataclass
class Recipe:
    """What a benchmark needs from a recipe: the strategy, the network, the optimiser and the task's shape."""

    name: str
    strategy: RecursionStrategy
    network: NetworkConfig
    optim: OptimConfig
    vocab_size: int
    seq_len: int
    num_puzzle_ids: int = 1
    gradient_clip_val: float | None = None


def task_shape(data: dict[str, Any]) -> tuple[int, int]:
    """(vocab_size, seq_len) of a recipe's data module, read from its class_path and init_args."""
    kind = str(data.get("class_path", "")).rsplit(".", 1)[-1]
    args = data.get("init_args") or {}
    if kind in ("Sudoku", "GeneratedSudoku"):
        size = 9 if kind == "Sudoku" else int(args.get("size", 6))
        return size + 2, size * size
    if kind in ("Maze", "GeneratedMaze"):
        side = 30 if kind == "Maze" else int(args.get("side", 10))
        return 6, side * side
    if kind == "ARC":
        return 12, 900
    raise ValueError(f"unknown data module {data.get('class_path')!r}: pass --vocab-size and --seq-len")


def load_recipe(name: str, vocab_size: int | None = None, seq_len: int | None = None) -> Recipe:
    """A preset name (see PRESETS), a configs/<name>.yaml stem, or a path to a recipe YAML."""
    path = Path(name)
    if name in PRESETS:
        path = ROOT / "configs" / PRESETS[name]
    elif not path.exists() and (ROOT / "configs" / f"{name}.yaml").exists():
        path = ROOT / "configs" / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no recipe {name!r}: a preset ({', '.join(PRESETS)}) or a YAML path")
    config = yaml.safe_load(path.read_text())
    model = config.get("model", {})
    strategy = RecursionStrategy.from_hparams(model["strategy"])
    network = NetworkConfig(**(model.get("network") or {}))
    optim_args = dict(model.get("optim") or {})
    if "betas" in optim_args:
        optim_args["betas"] = tuple(optim_args["betas"])
    if vocab_size is None or seq_len is None:
        vocab, length = task_shape(config.get("data", {}))
        vocab_size, seq_len = vocab_size or vocab, seq_len or length
    clip = (config.get("trainer") or {}).get("gradient_clip_val")
    label = name if name in PRESETS else path.stem
    return Recipe(label, strategy, network, OptimConfig(**optim_args), vocab_size, seq_len, 1,
                  float(clip) if clip else None)


# --- measurement helpers -----------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...] = (2048, 4096),
                repeats: int = 5) -> float:
    """Best FLOP/s of large square torch.matmul on `device` in `dtype` (the MFU denominator)."""
    best = 0.0
    generator = torch.Generator(device=device).manual_seed(0)
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        torch.matmul(a, b)
        synchronize(device)
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            synchronize(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
        del a, b
    return best


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def synthetic_batch(recipe: Recipe, size: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tokens of the task's vocabulary and length (ids 1.. as real puzzles: 0 is PAD)."""
    g = torch.Generator().manual_seed(seed)
    vocab, length = recipe.vocab_size, recipe.seq_len
    return {
        "inputs": torch.randint(1, vocab, (size, length), generator=g).to(device),
        "labels": torch.randint(1, vocab, (size, length), generator=g).to(device),
        "puzzle_ids": torch.randint(0, recipe.num_puzzle_ids, (size,), generator=g).to(device),
    }


def chunks(batch: dict[str, torch.Tensor], size: int) -> list[dict[str, torch.Tensor]]:
    """Split a batch into micro-batches of `size` examples (the last may be smaller)."""
    total = batch["inputs"].shape[0]
    return [{k: v[i : i + size] for k, v in batch.items()} for i in range(0, total, size)]


@contextlib.contextmanager
def precision_context(device: torch.device, precision: str) -> Iterator[None]:
    """fp32: nothing; bf16: autocast to bfloat16, as Lightning's bf16-mixed."""
    if precision == "fp32":
        yield
    else:
        with torch.autocast(device.type, dtype=PRECISIONS[precision]):
            yield


# --- one configuration (runs in its own process) -----------------------------------------------------------------


@dataclass
class Spec:
    """One benchmark configuration."""

    recipe: str
    batch: int
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool | str = False  # False, True (the modules) or "segment" (model.network.compile)
    attention_backend: str = "auto"
    micro_batch: int | None = None
    eval_batch: int | None = None
    warmup: int = 1
    steps: int = 5
    eval_segments: int | None = None
    eval_repeats: int = 1
    progress: float = 1.0
    vocab_size: int | None = None
    seq_len: int | None = None
    rsm_depth: tuple[int, int] | None = None  # (H, L): a fixed-depth RSM for the memory check
    allocator: str = "default"
    skip_eval: bool = False
    seed: int = 0


def build(spec: Spec, device: torch.device) -> tuple[Recipe, RecursiveReasoner]:
    """The recipe with the spec's options applied, and its model on `device`."""
    recipe = load_recipe(spec.recipe, spec.vocab_size, spec.seq_len)
    if spec.rsm_depth is not None:
        outer, latent = spec.rsm_depth
        strategy = RSM(h_schedule=[(0.0, outer)], l_schedule=[(0.0, latent)], p_detach=0.0, h_test=outer,
                       l_test=latent)
        recipe = replace(recipe, strategy=strategy)
    network = replace(recipe.network, compile=spec.compile, attention_backend=spec.attention_backend)
    if spec.precision == "fp32":  # fp32 means fp32 throughout: the GPU recipes' bf16 recursion states are not kept
        network = replace(network, forward_dtype="float32")
    recipe = replace(recipe, network=network)
    torch.manual_seed(spec.seed)
    optim = replace(recipe.optim, lr_min_ratio=1.0)  # the lr schedule costs nothing; cosine decay needs a total
    model = RecursiveReasoner(recipe.strategy, network, optim, vocab_size=recipe.vocab_size,
                              seq_len=recipe.seq_len, num_puzzle_ids=recipe.num_puzzle_ids)
    return recipe, model.to(device)


def train_segments(model: RecursiveReasoner, optimizer: torch.optim.Optimizer, recipe: Recipe,
                   batch: dict[str, torch.Tensor], spec: Spec, device: torch.device, progress: Progress, count: int,
                   carries: list | None) -> tuple[float, list, int]:
    """Run `count` training segments (one optimiser step each) from `carries` (None: fresh); returns (seconds,
    carries, analytic FLOPs of the segments run, each counted at the gradient window it drew)."""
    strategy, net = model.strategy, model.net
    per_call, flops = call_flops(net), 0
    parts = chunks(batch, spec.micro_batch or spec.batch)
    carries = carries or [strategy.initial_carry(net, part) for part in parts]
    model.train()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(count):
        for i, part in enumerate(parts):
            carry = strategy.refresh(net, carries[i], part)
            with precision_context(device, spec.precision):
                out = strategy.run_segment(net, carry, progress, training=True)
                loss = strategy.loss(net, carry, out, progress)
            total = loss.total / spec.batch
            model.guard.observe_loss(total.detach().unsqueeze(0), ("loss",), progress.step)  # on the device
            total.backward()
            carries[i] = strategy.advance(carry, out, training=True)
            flops += segment_flops(net, strategy, progress, True, per_call, segment=out)["total"] * len(part["inputs"])
        if recipe.gradient_clip_val:
            clip_gradients(optimizer, recipe.gradient_clip_val, "norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    seconds = time.perf_counter() - start
    model.guard.raise_if_tripped()  # read once, after the timing, as a logging step would
    return seconds, carries, flops


def evaluate(model: RecursiveReasoner, batch: dict[str, torch.Tensor], spec: Spec, device: torch.device,
             strategy: RecursionStrategy) -> float:
    """`RecursiveReasoner.solve` over the batch (in eval batches), all segments; returns seconds."""
    model.eval()
    parts = chunks(batch, spec.eval_batch or spec.batch)
    synchronize(device)
    start = time.perf_counter()
    with precision_context(device, spec.precision):
        for part in parts:
            model.solve(part, early_exit=False, strategy=strategy)
    synchronize(device)
    return time.perf_counter() - start


def with_segments(strategy: RecursionStrategy, segments: int | None) -> RecursionStrategy:
    """The strategy, or a copy that evaluates `segments` supervision segments."""
    if segments is None:
        return strategy
    changed = copy.copy(strategy)
    changed.supervision_steps = segments
    return changed


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int:
    """CUDA: max allocated since the last reset; CPU: peak RSS of the process."""
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()


def run_spec(spec: Spec) -> dict[str, Any]:
    """Measure one configuration in this process: evaluation first (its memory peak is then its own), training."""
    device = torch.device(spec.device)
    if spec.allocator == KEEP and not keep_freed_memory():
        raise RuntimeError("--allocator keep needs glibc")
    recipe, model = build(spec, device)
    net, strategy = model.net, model.strategy
    progress = Progress(round(spec.progress * 1000), 1000)
    batch = synthetic_batch(recipe, spec.batch, device, spec.seed)
    optimizer = model.configure_optimizers()["optimizer"]
    result: dict[str, Any] = {"spec": spec.__dict__, "recipe": recipe.name, "parameters": net.num_parameters(),
                              "device_name": device_name(device), "threads": torch.get_num_threads()}
    baseline = current_rss_bytes() if device.type == "cpu" else torch.cuda.memory_allocated(device)
    result["baseline_memory"] = baseline

    if not spec.skip_eval:
        eval_strategy = with_segments(strategy, spec.eval_segments)
        reset_peak(device)
        first = chunks(batch, spec.eval_batch or spec.batch)[0]
        evaluate(model, first, spec, device, with_segments(strategy, 1))  # warm-up and compilation: one chunk
        seconds = min(evaluate(model, batch, spec, device, eval_strategy) for _ in range(spec.eval_repeats))
        segments = eval_strategy.supervision_steps
        flops = segment_flops(net, eval_strategy, progress, training=False)
        result["eval"] = {"seconds": seconds, "segments": segments,
                          "example_segments_per_s": spec.batch * segments / seconds,
                          "flops_per_example_segment": flops["total"],
                          "flops_per_s": flops["total"] * spec.batch * segments / seconds,
                          "peak_memory": peak_memory(device)}

    reset_peak(device)
    if spec.warmup:  # on the first micro-batch only: page-faults the working set in and runs any compilation
        first = chunks(batch, spec.micro_batch or spec.batch)[0]
        train_segments(model, optimizer, recipe, first, spec, device, progress, spec.warmup, None)
    carries = None
    total_flops, seconds = 0, 0.0
    for _ in range(spec.steps):
        dt, carries, step_flops = train_segments(model, optimizer, recipe, batch, spec, device, progress, 1, carries)
        seconds += dt
        total_flops += step_flops
    flops = segment_flops(net, strategy, progress, training=True)
    result["train"] = {"seconds": seconds, "steps": spec.steps, "seconds_per_segment": seconds / max(spec.steps, 1),
                       "example_segments_per_s": spec.batch * spec.steps / seconds,
                       "flops_per_example_segment": total_flops / (spec.batch * spec.steps),
                       "calls": flops["calls"], "calls_with_grad": flops["calls_with_grad"],
                       "flops_per_s": total_flops / seconds, "peak_memory": peak_memory(device)}
    return result


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "CPU"
    return f"{model}, {torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}"


# --- driver ------------------------------------------------------------------------------------------------------


def allocator_environment(name: str) -> dict[str, str]:
    """Environment variables that run a child process under allocator `name` ('default': none)."""
    if name in ("default", KEEP):
        return {}
    names, settings, install = ALLOCATORS[name]
    for directory in LIBRARY_DIRS:
        for library in names:
            path = Path(directory) / library
            if path.exists():
                preload = " ".join(filter(None, [os.environ.get("LD_PRELOAD", ""), str(path)]))
                return {"LD_PRELOAD": preload, **settings}
    raise FileNotFoundError(f"--allocator {name}: none of {', '.join(names)} found; install it ({install})")


def run_in_subprocess(spec: Spec) -> dict[str, Any]:
    """Run one configuration in a fresh interpreter and return its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec.__dict__)]
    env = {**os.environ, **allocator_environment(spec.allocator)}
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-15:]
        return {"spec": spec.__dict__, "error": "\n".join(tail)}
    return json.loads(lines[-1])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def table_header(device: torch.device) -> str:
    memory = "peak alloc GiB" if device.type == "cuda" else "peak RSS GiB"
    columns = ["recipe", "params", "batch (micro)", "precision", "compile", "SDPA", "allocator", "train ex-seg/s",
               "s/segment", "train GFLOP/ex-seg", "train GFLOP/s", "train MFU", "eval ex-seg/s", "eval GFLOP/s",
               "eval MFU", f"train {memory}", f"eval {memory}", "matmul peak GFLOP/s (before / after)", "load"]
    return "| " + " | ".join(columns) + " |\n|" + " --- |" * len(columns)


def table_row(result: dict[str, Any]) -> str:
    spec = result["spec"]
    if "error" in result:
        return f"| {spec['recipe']} | error: {result['error'].splitlines()[-1]} |"
    peak = result["matmul_peak"]
    train, ev = result["train"], result.get("eval")
    batch = f"{spec['batch']}" + (f" ({spec['micro_batch']})" if spec["micro_batch"] else "")
    cells = [result["recipe"], f"{result['parameters']:,}", batch, spec["precision"],
             COMPILE_NAMES[spec["compile"]], spec["attention_backend"], spec["allocator"],
             f"{train['example_segments_per_s']:.2f}", f"{train['seconds_per_segment']:.2f}",
             f"{train['flops_per_example_segment'] / 1e9:.2f}", f"{train['flops_per_s'] / 1e9:.1f}",
             f"{train['flops_per_s'] / peak:.1%}"]
    if ev:
        cells += [f"{ev['example_segments_per_s']:.2f}", f"{ev['flops_per_s'] / 1e9:.1f}",
                  f"{ev['flops_per_s'] / peak:.1%}"]
    else:
        cells += ["-", "-", "-"]
    cells += [gib(train["peak_memory"]), gib(ev["peak_memory"]) if ev else "-",
              f"{result['matmul_peak_before'] / 1e9:.0f} / {result['matmul_peak_after'] / 1e9:.0f}",
              f"{result.get('load', 0.0):.2f}"]
    return "| " + " | ".join(cells) + " |"


def busy_cores(seconds: float = 3.0) -> float:
    """CPU cores kept busy by every process of the machine over the next `seconds` (from /proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]
        return sum(values) - idle, sum(values)
    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def wait_until_idle(load: float, limit: float, cores: float = 0.5) -> float:
    """Wait (at most `limit` seconds) until the 1-minute load average is below `load` and other processes keep
    fewer than `cores` cores busy; returns the load average then."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and (os.getloadavg()[0] >= load or busy_cores() >= cores):
        time.sleep(10)
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", nargs="+", default=["demo"], help=f"presets {', '.join(PRESETS)} or YAML paths")
    parser.add_argument("--batch", nargs="+", type=int, default=[64])
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="train the batch as micro-batches of this size (gradient accumulation, one optimiser "
                             "step per batch): for batches whose activations do not fit in memory")
    parser.add_argument("--eval-batch", type=int, default=None, help="evaluation chunk size (default: the batch)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=list(PRECISIONS))
    parser.add_argument("--compile", nargs="+", default=["off"], choices=list(COMPILE),
                        help="on: compile the latent and answer modules; segment: each whole supervision segment")
    parser.add_argument("--attention-backend", nargs="+", default=["auto"],
                        choices=["auto", "math", "flash", "efficient", "cudnn"])
    parser.add_argument("--allocator", nargs="+", default=["default"], choices=["default", KEEP, *ALLOCATORS],
                        help="memory allocator of each configuration's process (CPU: keep, jemalloc and tcmalloc keep "
                             "freed memory instead of page-faulting every new activation in again)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training segments first")
    parser.add_argument("--steps", type=int, default=5, help="timed training segments")
    parser.add_argument("--eval-segments", type=int, default=None,
                        help="segments per evaluation (default: the recipe's N_sup; throughput is per segment)")
    parser.add_argument("--eval-repeats", type=int, default=1, help="timed evaluations (the best is kept)")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--progress", type=float, default=1.0,
                        help="training progress in [0, 1] for depth schedules (RSM, CGAR); 1.0 is the final depth")
    parser.add_argument("--vocab-size", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--rsm-memory", action="store_true",
                        help="RSM peak memory of a training segment at each --rsm-depths H (fixed L)")
    parser.add_argument("--rsm-depths", nargs="+", type=int, default=[2, 8, 32])
    parser.add_argument("--rsm-latent", type=int, default=2, help="L for --rsm-memory")
    parser.add_argument("--rsm-recipe", default="rsm_sudoku")
    parser.add_argument("--inline", action="store_true", help="run in this process (peak memory is then shared)")
    parser.add_argument("--wait-load", type=float, default=None, metavar="LOAD",
                        help="before each configuration wait (up to --wait-limit s) until the 1-minute load average "
                             "is below LOAD and no other process keeps half a core busy; the load column is the load "
                             "average when the configuration started")
    parser.add_argument("--wait-limit", type=float, default=600.0)
    parser.add_argument("--json", type=Path, default=None, help="also write every result to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        data = json.loads(args.child)
        if data.get("rsm_depth") is not None:
            data["rsm_depth"] = tuple(data["rsm_depth"])
        print(json.dumps(run_spec(Spec(**data))))
        return

    device = torch.device(args.device)
    specs: list[Spec] = []
    if args.rsm_memory:
        for outer in args.rsm_depths:
            specs.append(Spec(args.rsm_recipe, args.batch[0], args.device, args.precision[0], COMPILE[args.compile[0]],
                              args.attention_backend[0], allocator=args.allocator[0], micro_batch=args.micro_batch,
                              warmup=args.warmup,
                              steps=args.steps, rsm_depth=(outer, args.rsm_latent), skip_eval=True))
    else:
        for recipe, batch, precision, compiled, backend, allocator in itertools.product(
            args.recipe, args.batch, args.precision, args.compile, args.attention_backend, args.allocator
        ):
            specs.append(Spec(recipe, batch, args.device, precision, COMPILE[compiled], backend, allocator=allocator,
                              micro_batch=args.micro_batch, eval_batch=args.eval_batch, warmup=args.warmup,
                              steps=args.steps, eval_segments=args.eval_segments, eval_repeats=args.eval_repeats,
                              progress=args.progress, vocab_size=args.vocab_size, seq_len=args.seq_len,
                              skip_eval=args.skip_eval))

    print(f"device: {device_name(device)}; matmul peak = best large square matmul measured by this process "
          "just before and just after each configuration (MFU uses the larger)")
    results = []
    if args.rsm_memory:
        memory = "peak alloc GiB" if device.type == "cuda" else "peak RSS GiB"
        print(f"| H | L | module calls (with grad) | train {memory} | over baseline GiB | s/segment | load |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
    else:
        print(table_header(device))
    for spec in specs:
        if args.wait_load is not None:
            load = wait_until_idle(args.wait_load, args.wait_limit)
        else:
            load = os.getloadavg()[0]
        dtype = PRECISIONS[spec.precision]
        before = matmul_peak(device, dtype) if not args.rsm_memory else 0.0
        result = run_spec(spec) if args.inline else run_in_subprocess(spec)
        after = matmul_peak(device, dtype) if not args.rsm_memory else 0.0
        result.update(load=load, matmul_peak_before=before, matmul_peak_after=after, matmul_peak=max(before, after))
        results.append(result)
        if args.rsm_memory:
            if "error" in result:
                print(f"| {spec.rsm_depth[0]} | error: {result['error'].splitlines()[-1]} |")
                continue
            train = result["train"]
            print(f"| {spec.rsm_depth[0]} | {spec.rsm_depth[1]} | {train['calls']} ({train['calls_with_grad']}) | "
                  f"{gib(train['peak_memory'])} | {gib(train['peak_memory'] - result['baseline_memory'])} | "
                  f"{train['seconds_per_segment']:.2f} | {load:.2f} |", flush=True)
        else:
            print(table_row(result), flush=True)
    ok = [r for r in results if "train" in r]
    if ok and not args.rsm_memory:
        best = max(ok, key=lambda r: r["train"]["flops_per_s"] / r["matmul_peak"])
        print(f"summary: {len(ok)}/{len(results)} configurations ran; best training MFU "
              f"{best['train']['flops_per_s'] / best['matmul_peak']:.1%} ({best['recipe']}, batch "
              f"{best['spec']['batch']}, {best['spec']['precision']}, compile "
              f"{COMPILE_NAMES[best['spec']['compile']]}) against a measured peak of "
              f"{best['matmul_peak'] / 1e9:.1f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=1))

if __name__ == "__main__":
    main()
