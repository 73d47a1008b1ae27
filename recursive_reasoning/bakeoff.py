"""`rr bakeoff GRID.yaml`: train and test a grid of recipes x seeds, each run in its own `rr fit` / `rr test`
process, and write one results file, a summary table and plots of held-out accuracy against training FLOPs and
wall-clock.

A grid file names a base recipe (the regime: data, budget, width) and rows; a row adds config overlays and flags
(an ablation), and may list further evaluations of the same checkpoints (test-time compute, live weights, an
ensemble). Every (row, seed) runs in `OUT/<row>/seed<S>/`: `fit.json` and `test-<eval>.json` record finished steps,
so a rerun skips them (resumable; a fit that finished before its record was written is adopted from its
`rr_summary.json`). `--report` only collects what exists. `--trainer.*`, `--model.*` and `--data.*` flags are passed
to every `rr fit` and `rr test` (e.g. `--trainer.accelerator=gpu`). See docs/reproductions.md.

    rr bakeoff benchmarks/grids/sudoku6.yaml --jobs 2
    rr bakeoff benchmarks/grids/sudoku6.yaml --rows trm hrm --seeds 0 1 2 --report
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recursive_reasoning.core.files import atomic_write
from recursive_reasoning.plot import Series, chart_panels

__all__ = ["Evaluation", "Grid", "Row", "collect", "load_grid", "main", "run_grid", "summarize"]

SUMMARY = "rr_summary.json"
FIELDS = ("row", "row_label", "eval", "label", "seed", "exact_accuracy", "token_accuracy", "steps", "train_flops",
          "train_seconds", "test_seconds", "peak_memory_mib")
_PASSED_ON = ("--trainer.", "--model.", "--data.", "--config")  # flags handed to every rr fit / rr test
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Evaluation:
    """One `rr test` of a row's checkpoints: extra flags (`{checkpoints}` becomes the run's checkpoint folder, as an
    ensemble needs; a `--ckpt_path` among them replaces the run's last checkpoint) and, optionally, the paper's
    number it stands for."""

    id: str
    label: str
    args: list[str] = field(default_factory=list)
    paper: float | None = None


@dataclass
class Row:
    """One method of the grid: config overlays and flags on top of the base recipe, and its evaluations (the first
    is the plain test)."""

    id: str
    label: str
    configs: list[str]
    args: list[str]
    evaluations: list[Evaluation]


@dataclass
class Grid:
    """A base recipe, its rows and seeds, and where the runs go."""

    name: str
    base: str
    rows: list[Row]
    seeds: list[int]
    out: Path
    baseline: str | None
    root: Path  # configs are relative to the grid file's project root (the folder holding configs/)


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{what} id {value!r} must be letters, digits, '_', '-' or '.' (it names a folder)")
    return value


def load_grid(path: str | os.PathLike) -> Grid:
    """Read a grid YAML, checking that every row and evaluation is well formed and every config file exists."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no grid file {path}; the shipped grids are in benchmarks/grids/")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"name", "base", "rows", "seeds", "out", "baseline"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; a grid has name, base, rows, seeds, out, baseline")
    root = next((p for p in [path.parent, *path.parents] if (p / "configs").is_dir()), Path.cwd())
    rows: list[Row] = []
    for entry in data.get("rows") or []:
        row_id = _check_id(entry.get("id"), "row")
        bad = set(entry) - {"id", "label", "configs", "args", "evals", "paper"}
        if bad:
            raise ValueError(f"{path}: row {row_id!r} has unknown keys {sorted(bad)}")
        evaluations = [Evaluation("test", entry.get("label", row_id), [], entry.get("paper"))]
        for item in entry.get("evals") or []:
            evaluations.append(Evaluation(_check_id(item.get("id"), "evaluation"), item.get("label", item["id"]),
                                          [str(a) for a in item.get("args") or []], item.get("paper")))
        ids = [e.id for e in evaluations]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{path}: row {row_id!r} repeats an evaluation id: {ids} ('test' is the plain test)")
        rows.append(Row(row_id, entry.get("label", row_id), [str(c) for c in entry.get("configs") or []],
                        [str(a) for a in entry.get("args") or []], evaluations))
    if not rows:
        raise ValueError(f"{path} lists no rows")
    if len({r.id for r in rows}) != len(rows):
        raise ValueError(f"{path}: two rows share an id")
    grid = Grid(str(data.get("name", path.stem)), str(data["base"]), rows, [int(s) for s in data.get("seeds", [0])],
                Path(data.get("out", f"runs/bakeoff/{path.stem}")), data.get("baseline"), root)
    for config in [grid.base, *(c for r in rows for c in r.configs)]:
        if not _resolve(grid, config).is_file():
            raise FileNotFoundError(f"{path}: config {config} does not exist (paths are relative to {root})")
    if grid.baseline is not None and grid.baseline not in {r.id for r in rows}:
        raise ValueError(f"{path}: baseline {grid.baseline!r} is not a row id")
    return grid


def _resolve(grid: Grid, config: str) -> Path:
    p = Path(config)
    return p if p.is_absolute() else grid.root / p


# --- running -----------------------------------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: Any) -> None:
    payload = json.dumps(data, indent=1).encode()
    atomic_write(path, lambda handle: handle.write(payload))


def _newest_summary(folder: Path, stage: str) -> dict[str, Any] | None:
    """The newest complete `rr_summary.json` of `stage` under a run folder's versioned log directories."""
    found = []
    for path in folder.glob(f"**/{SUMMARY}"):
        summary = _read(path)
        if summary and summary.get("stage") == stage and summary.get("complete"):
            found.append((path.stat().st_mtime, summary))
    return max(found, key=lambda item: item[0])[1] if found else None


def _run(command: list[str], log: Path, threads: int | None) -> tuple[int, float]:
    """Run one rr command with its output appended to `log`; returns (exit status, seconds)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        status = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env).returncode
    return status, time.perf_counter() - start


def _tail(log: Path, lines: int = 6) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _configs(grid: Grid, row: Row) -> list[str]:
    """The row's --config flags, and RunSummary appended to the callbacks when none of its configs has it."""
    paths = [_resolve(grid, c) for c in [grid.base, *row.configs]]
    flags = [a for p in paths for a in ("--config", str(p))]
    callbacks = [c for p in paths for c in ((yaml.safe_load(p.read_text()) or {}).get("trainer") or {}).get(
        "callbacks") or [] if isinstance(c, dict)]
    if not any(str(c.get("class_path", "")).endswith("RunSummary") for c in callbacks):
        flags.append("--trainer.callbacks+=recursive_reasoning.callbacks.RunSummary")
    return flags


def _claim(folder: Path) -> bool:
    """Take the (row, seed) folder's lock for this process: False while another live process holds it, so two
    `rr bakeoff` runs of one grid share the work instead of training the same run twice."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = int(lock.read_text().strip() or 0)
                os.kill(holder, 0)
            except (ValueError, OSError):  # unreadable, or its process is gone: a stale lock
                lock.unlink(missing_ok=True)
                continue
            return holder == os.getpid()
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return True
    return False


def run_job(grid: Grid, row: Row, seed: int, extra: Sequence[str], threads: int | None, dry_run: bool = False
            ) -> list[str]:
    """Fit one (row, seed) unless done, then each evaluation not yet done; returns the failures (empty: all ran).
    A (row, seed) another live `rr bakeoff` process is running is left to it."""
    folder = grid.out / row.id / f"seed{seed}"
    if dry_run:
        return _run_job(grid, row, seed, folder, extra, threads, dry_run)
    if not _claim(folder):
        print(f"{row.id} seed {seed}: another rr bakeoff process is running it; skipped", flush=True)
        return []
    try:
        return _run_job(grid, row, seed, folder, extra, threads, dry_run)
    finally:
        (folder / ".lock").unlink(missing_ok=True)


def _run_job(grid: Grid, row: Row, seed: int, folder: Path, extra: Sequence[str], threads: int | None,
             dry_run: bool) -> list[str]:
    rr = [sys.executable, "-m", "recursive_reasoning"]
    fit_record = folder / "fit.json"
    fit = _read(fit_record)
    if fit is None:
        command = [*rr, "fit", *_configs(grid, row), *row.args, f"--seed_everything={seed}",
                   f"--trainer.default_root_dir={folder / 'fit'}", *extra]
        if dry_run:
            print(" ".join(command))
            fit = {"last_checkpoint": str(folder / "fit" / "latest" / "checkpoints" / "last.ckpt"), "log_dir": "?"}
        else:
            summary = _newest_summary(folder / "fit", "fit")  # a fit that finished before its record was written
            if summary is None:
                status, _ = _run(command, folder / "fit.log", threads)
                summary = _newest_summary(folder / "fit", "fit")
                if status != 0 or summary is None:
                    why = f"exit status {status}" if status else f"it wrote no complete {SUMMARY}"
                    return [f"{row.id} seed {seed} fit failed ({why}); see {folder / 'fit.log'}:\n"
                            f"{_tail(folder / 'fit.log')}"]
            if not summary.get("last_checkpoint"):
                return [f"{row.id} seed {seed}: the fit saved no checkpoint; keep ModelCheckpoint(save_last=true) in "
                        "the recipe"]
            fit = {**summary, "command": command}
            _write_json(fit_record, fit)
    failures = []
    for evaluation in row.evaluations:
        record = folder / f"test-{evaluation.id}.json"
        if record.exists():
            continue
        checkpoints = str(Path(fit["last_checkpoint"]).parent)
        args = [a.replace("{checkpoints}", checkpoints) for a in evaluation.args]
        if not any(a.startswith("--ckpt_path") for a in args):  # an evaluation may name its own checkpoint
            args.append(f"--ckpt_path={fit['last_checkpoint']}")
        command = [*rr, "test", *_configs(grid, row), *row.args, *args, f"--seed_everything={seed}",
                   f"--trainer.default_root_dir={folder / f'test-{evaluation.id}'}", *extra]
        if dry_run:
            print(" ".join(command))
            continue
        status, seconds = _run(command, folder / f"test-{evaluation.id}.log", threads)
        summary = _newest_summary(folder / f"test-{evaluation.id}", "test")
        if status != 0 or summary is None:
            failures.append(f"{row.id} seed {seed} test {evaluation.id} failed (exit status {status}); see "
                            f"{folder / f'test-{evaluation.id}.log'}:\n{_tail(folder / f'test-{evaluation.id}.log')}")
            continue
        _write_json(record, {**summary, "test_seconds": round(seconds, 2), "command": command})
    return failures


def run_grid(grid: Grid, rows: Sequence[Row], seeds: Sequence[int], extra: Sequence[str], jobs: int = 1,
             threads: int | None = None, dry_run: bool = False) -> list[str]:
    """Run every (row, seed) job, `jobs` at a time (rows in order, seeds inside); returns the failures."""
    work = [(row, seed) for row in rows for seed in seeds]
    with ThreadPoolExecutor(max_workers=1 if dry_run else max(1, jobs)) as pool:
        results = list(pool.map(lambda job: run_job(grid, job[0], job[1], extra, threads, dry_run), work))
    return [failure for result in results for failure in result]


# --- results -----------------------------------------------------------------------------------------------------


def collect(grid: Grid, rows: Sequence[Row], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """One record per finished (row, evaluation, seed): accuracies, steps, FLOPs, seconds and peak memory."""
    records = []
    for row in rows:
        for seed in seeds:
            folder = grid.out / row.id / f"seed{seed}"
            fit = _read(folder / "fit.json")
            if fit is None:
                continue
            for evaluation in row.evaluations:
                test = _read(folder / f"test-{evaluation.id}.json")
                if test is None:
                    continue
                records.append({
                    "row": row.id, "row_label": row.label, "eval": evaluation.id, "label": evaluation.label,
                    "seed": seed, "exact_accuracy": test.get("test/exact_accuracy"),
                    "token_accuracy": test.get("test/accuracy"), "steps": fit.get("steps"),
                    "train_flops": fit.get("train_flops"), "train_seconds": fit.get("train_seconds"),
                    "test_seconds": test.get("test_seconds"),
                    "peak_memory_mib": max(fit.get("peak_memory_mib") or 0, test.get("peak_memory_mib") or 0),
                    "curve": fit.get("curve", []), "paper": evaluation.paper,
                    "metrics": {k: v for k, v in test.items() if k.startswith("test/")},
                })
    return records


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def _groups(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["row"], record["eval"]), []).append(record)
    return groups


def summarize(grid: Grid, records: Sequence[dict[str, Any]]) -> str:
    """A markdown table: per row and evaluation the mean +- sd over seeds, and the difference from the baseline.

    Two differences: of the means (unpaired), and the mean of the per-seed differences (paired, `_paired`).
    A difference is called inside the noise when it is at most twice its standard error,
    sqrt(sd_a^2 / n_a + sd_b^2 / n_b) (about a 95% interval; with 3 seeds a rough guide, not a test); with fewer than
    2 seeds on either side there is no noise estimate to call it by.
    """
    groups = _groups(records)
    base = groups.get((grid.baseline, "test")) if grid.baseline else None
    lines = [
        f"| method | evaluation | seeds | test exact % (mean ± sd) | per seed | Δ vs {grid.baseline or '-'} | "
        "paired Δ (same seeds) | paired Δ vs the row's test | token % | paper | steps | train FLOPs | train s | "
        "test s | peak MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (row, evaluation), group in groups.items():
        exact = [100 * r["exact_accuracy"] for r in group]
        mean, sd = _mean_sd(exact)
        delta = paired = own = "-"
        if evaluation != "test" and (row, "test") in groups:  # what the evaluation adds to the same checkpoints
            own = _paired(group, groups[(row, "test")])
        if base is not None and (row, evaluation) != (grid.baseline, "test"):
            paired = _paired(group, base)
            base_exact = [100 * r["exact_accuracy"] for r in base]
            base_mean, base_sd = _mean_sd(base_exact)
            se = math.sqrt(((sd if len(exact) > 1 else 0) ** 2) / len(exact)
                           + ((base_sd if len(base_exact) > 1 else 0) ** 2) / len(base_exact))
            diff = mean - base_mean
            if len(exact) < 2 or len(base_exact) < 2:
                verdict = "too few seeds to tell"
            else:
                verdict = "inside the noise" if abs(diff) <= 2 * se else "outside the noise"
            delta = f"{diff:+.1f} ({verdict})"
        first = group[0]
        token = statistics.mean(100 * r["token_accuracy"] for r in group)
        lines.append(
            f"| {first['row_label']} | {first['label'] if evaluation != 'test' else 'test'} | {len(group)} | "
            f"{mean:.1f} ± {sd:.1f} | {', '.join(f'{e:.1f}' for e in exact)} | {delta} | {paired} | {own} | {token:.1f} | "
            f"{first['paper'] if first['paper'] is not None else '-'} | "
            f"{statistics.mean(r['steps'] for r in group):.0f} | "
            f"{statistics.mean(r['train_flops'] for r in group):.3g} | "
            f"{statistics.mean(r['train_seconds'] for r in group):.0f} | "
            f"{statistics.mean(r['test_seconds'] for r in group):.0f} | "
            f"{max(r['peak_memory_mib'] for r in group):.0f} |"
        )
    lines += _further_metrics(groups)
    return "\n".join(lines) + "\n"


def _paired(group: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]]) -> str:
    """Mean +- sd of the per-seed differences from the baseline over the seeds both have: a seed fixes the initial
    weights (for equal shapes), the data order and the exploration draws, so pairing removes that part of the noise.
    Called outside the noise when |mean| > 2 sd / sqrt(n)."""
    ours = {r["seed"]: 100 * r["exact_accuracy"] for r in group}
    theirs = {r["seed"]: 100 * r["exact_accuracy"] for r in base}
    diffs = [ours[s] - theirs[s] for s in sorted(ours.keys() & theirs.keys())]
    if len(diffs) < 2:
        return "too few seeds to tell"
    mean, sd = _mean_sd(diffs)
    verdict = "inside the noise" if abs(mean) <= 2 * sd / math.sqrt(len(diffs)) else "outside the noise"
    return f"{mean:+.1f} ± {sd:.1f} ({verdict})"


_STANDARD = {"test/exact_accuracy", "test/accuracy", "test/lm_loss", "test/q_halt_accuracy", "test/steps"}


def _further_metrics(groups: dict[tuple[str, str], list[dict[str, Any]]]) -> list[str]:
    """A second table with every other test metric a row logged (deeper evaluations, settled reliability, oracle
    and label-free votes, steps run), mean +- sd over seeds; rates in %."""
    lines = []
    for (_, evaluation), group in groups.items():
        names = sorted({k for r in group for k in r["metrics"]} - _STANDARD)
        for name in names:
            values = [r["metrics"][name] for r in group if name in r["metrics"]]
            scale = 1.0 if name.endswith(("steps", "per_puzzle")) else 100.0
            mean, sd = _mean_sd([scale * v for v in values])
            label = group[0]["label"] if evaluation != "test" else "test"
            lines.append(f"| {group[0]['row_label']} | {label} | {name} | {len(values)} | {mean:.1f} ± {sd:.1f} |")
    if not lines:
        return []
    return ["", "| method | evaluation | further metric | seeds | mean ± sd (rates in %) |",
            "| --- | --- | --- | --- | --- |", *lines]


def write_results(grid: Grid, records: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """results.csv, results.json, summary.md and accuracy.png (against FLOPs and wall-clock) in `out`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    paths = [out / "results.csv", out / "results.json", out / "summary.md", out / "accuracy.png"]
    payload = buffer.getvalue().encode()
    atomic_write(paths[0], lambda handle: handle.write(payload))
    _write_json(paths[1], list(records))
    table = summarize(grid, records).encode()
    atomic_write(paths[2], lambda handle: handle.write(table))
    plot(grid, records, paths[3])
    return paths


def plot(grid: Grid, records: Sequence[dict[str, Any]], path: Path) -> Path:
    """Held-out exact accuracy against training FLOPs and against training seconds, one line per method.

    The line is the validation curve logged during training (mean over seeds at each validation, the band +- sd);
    the marker with an error bar is the final test accuracy (mean +- sd). Further evaluations of the same checkpoints
    are in the summary table, not here: one colour per method keeps the methods apart.
    """
    flops, wall = [], []
    for (row, evaluation), group in _groups(records).items():
        if evaluation != "test":
            continue
        label = group[0]["row_label"]
        final = _mean_sd([100 * r["exact_accuracy"] for r in group])
        final_x = (statistics.mean(r["train_flops"] for r in group), statistics.mean(r["train_seconds"] for r in group))
        curves = [r["curve"] for r in group]
        points = min((len(c) for c in curves), default=0)
        for panel, axis, key in ((flops, 0, "train_flops"), (wall, 1, "train_seconds")):
            xs, ys, spread = [], [], []
            for i in range(points):
                values = [100 * c[i].get("val/exact_accuracy", float("nan")) for c in curves]
                xs.append(statistics.mean(c[i][key] for c in curves))
                mean, sd = _mean_sd(values)
                ys.append(mean)
                spread.append(0.0 if math.isnan(sd) else sd)
            err = 0.0 if math.isnan(final[1]) else final[1]
            panel.append(Series(label, xs, ys, spread if xs else None, [(final_x[axis], final[0], err)]))
    return chart_panels(path, [
        {"series": flops, "title": f"{grid.name}: held-out exact accuracy vs training FLOPs",
         "x_label": "training FLOPs (analytic matmul count)", "y_label": "exact accuracy %", "log_x": True,
         "y_range": (0.0, 100.0)},
        {"series": wall, "title": f"{grid.name}: held-out exact accuracy vs training time",
         "x_label": "training seconds (validation excluded)", "y_label": "exact accuracy %", "log_x": True,
         "y_range": (0.0, 100.0)},
    ], columns=2)


# --- command line ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rr bakeoff", description=__doc__.split("\n\n")[0],
        epilog="Flags starting with --trainer., --model., --data. or --config are passed to every rr fit and rr test, "
               "e.g. --trainer.accelerator=gpu.")
    parser.add_argument("grid", help="grid YAML (benchmarks/grids/*.yaml)")
    parser.add_argument("--rows", nargs="+", help="row ids to run (default: all, in the grid's order)")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the grid's)")
    parser.add_argument("--out", help="output folder (default: the grid's out)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (OMP_NUM_THREADS; default: the CPU cores / jobs)")
    parser.add_argument("--report", action="store_true", help="only collect finished runs and write the results")
    parser.add_argument("--dry-run", action="store_true", help="print the commands that would run, run nothing")
    args, extra = parser.parse_known_args(argv)
    unknown = [a for a in extra if a.startswith("-") and not a.startswith(_PASSED_ON)]
    if unknown:
        parser.exit(2, f"rr bakeoff: unknown option {unknown[0]}; rr bakeoff's own options are in rr bakeoff --help, "
                       "and flags for the runs start with --trainer., --model. or --data.\n")
    try:
        grid = load_grid(args.grid)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"rr bakeoff: {error}\n")
    if args.out:
        grid.out = Path(args.out)
    known = {r.id: r for r in grid.rows}
    missing = [r for r in args.rows or [] if r not in known]
    if missing:
        parser.exit(2, f"rr bakeoff: unknown rows {missing}; the grid has {list(known)}\n")
    rows = [known[r] for r in args.rows] if args.rows else grid.rows
    seeds = args.seeds or grid.seeds
    if args.jobs < 1:
        parser.exit(2, "rr bakeoff: --jobs must be >= 1\n")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    failures: list[str] = []
    if not args.report:
        failures = run_grid(grid, rows, seeds, extra, args.jobs, threads, args.dry_run)
        if args.dry_run:
            return 0
    records = collect(grid, rows, seeds)
    if records:
        for path in write_results(grid, records, grid.out):
            print(f"wrote {path}")
        print(summarize(grid, records))
    else:
        print(f"no finished runs under {grid.out} yet")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
