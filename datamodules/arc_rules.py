"""ARC grids in pure numpy: reading task files, the augmentations (dihedral x colour permutation), the 30x30 canvas
encoding and its inverse (crop, restore).

Token encoding (spec section 1): 0 PAD, 1 EOS, colours 0..9 are tokens 2..11 (vocabulary 12). A grid of h x w
colours sits on the 30x30 canvas at a row / column offset (0 except for translated training pairs); EOS marks the
row just below the grid (under its columns) and the column just right of it (beside its rows), where they fit on the
canvas. Everything else is PAD.

An augmentation is a dihedral transform k (``datamodules.dihedral``) followed by a colour map ``colours`` (int [10],
colour c becomes colours[c]) that keeps 0 fixed and permutes 1..9. It is stored as one row of 11 uint8:
``[k, colours[0], ..., colours[9]]``; the identity is ``IDENTITY``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.dihedral import SWAPS_AXES, dihedral, inverse_dihedral

__all__ = [
    "CANVAS",
    "EOS",
    "IDENTITY",
    "PAD",
    "VOCAB_SIZE",
    "Pair",
    "Task",
    "apply_augmentation",
    "augmentation_name",
    "crop",
    "crop_batch",
    "encode",
    "plan_augmentations",
    "read_tasks",
    "restore",
    "task_from_json",
    "to_grid",
]

CANVAS = 30
PAD, EOS, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 12
IDENTITY = np.array([0, *range(10)], dtype=np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Tasks and their files


@dataclass(frozen=True)
class Pair:
    """One input grid and its output grid (None where the file gives no output, e.g. hidden test outputs)."""

    input: np.ndarray
    output: np.ndarray | None


@dataclass(frozen=True)
class Task:
    """An ARC task: demonstration pairs (`train`) and test pairs."""

    name: str
    train: tuple[Pair, ...]
    test: tuple[Pair, ...]

    def grids(self) -> list[np.ndarray]:
        """Every grid of the task in a fixed order (train then test, input then output)."""
        out: list[np.ndarray] = []
        for pair in (*self.train, *self.test):
            out.append(pair.input)
            if pair.output is not None:
                out.append(pair.output)
        return out


def to_grid(value: Any, where: str) -> np.ndarray:
    """Validate a JSON grid (a list of equally long rows of ints 0..9, sides 1..30) and return it as uint8 [h, w].

    Raises:
        ValueError: naming `where` and what is wrong (not a list, ragged rows, too large, colour out of range).
    """
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise ValueError(f"{where}: a grid must be a non-empty list of rows (lists of ints), got {type(value).__name__}")
    widths = {len(row) for row in value}
    if len(widths) != 1:
        raise ValueError(f"{where}: ragged grid, rows have lengths {sorted(widths)}; every row needs the same length")
    h, w = len(value), widths.pop()
    if not (1 <= h <= CANVAS and 1 <= w <= CANVAS):
        raise ValueError(f"{where}: grid is {h}x{w}; ARC grids are 1..{CANVAS} on each side")
    if not all(type(c) is int for row in value for c in row):
        raise ValueError(f"{where}: grid cells must be ints 0..9")
    grid = np.array(value, dtype=np.int64)
    if grid.min() < 0 or grid.max() > 9:
        bad = np.argwhere((grid < 0) | (grid > 9))[0]
        raise ValueError(
            f"{where}: colour {int(grid[tuple(bad)])} at row {bad[0]}, column {bad[1]} is out of range 0..9"
        )
    return grid.astype(np.uint8)


def _pairs(items: Any, where: str, need_output: bool) -> tuple[Pair, ...]:
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of {{'input', 'output'}} pairs, got {type(items).__name__}")
    pairs = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "input" not in item:
            raise ValueError(f"{where}[{i}]: expected an object with an 'input' grid")
        if need_output and "output" not in item:
            raise ValueError(f"{where}[{i}]: a demonstration pair needs an 'output' grid")
        output = to_grid(item["output"], f"{where}[{i}].output") if "output" in item else None
        pairs.append(Pair(to_grid(item["input"], f"{where}[{i}].input"), output))
    return tuple(pairs)


def task_from_json(name: str, obj: Any, where: str) -> Task:
    """A task from its JSON object ({"train": [...], "test": [...]}); errors name `where` and the task."""
    if not isinstance(obj, dict) or "train" not in obj or "test" not in obj:
        raise ValueError(f"{where}: task {name!r} must be an object with 'train' and 'test' lists")
    train = _pairs(obj["train"], f"{where}: task {name} train", need_output=True)
    if not train:
        raise ValueError(f"{where}: task {name} has no demonstration pairs")
    return Task(name, train, _pairs(obj["test"], f"{where}: task {name} test", need_output=False))


def _read_json(path: Path) -> Any:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot be read ({err})") from None


def read_tasks(path: str | Path) -> dict[str, Task]:
    """Read ARC tasks from any of the public layouts; tasks come back sorted by name.

    Args:
        path: A directory of per-task files ``<task_id>.json``; or one combined file ``{task_id: task}`` (.json or
            .json.gz); or a Kaggle ``*_challenges.json(.gz)`` file, whose test outputs are read from the
            ``*_solutions.json(.gz)`` beside it when that file exists.

    Raises:
        FileNotFoundError: when the path does not exist or a directory holds no .json files.
        ValueError: for malformed JSON or malformed tasks, naming the file and task.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".json", ".json.gz")))
        if not files:
            raise FileNotFoundError(f"{path} holds no ARC task files (<task_id>.json)")
        tasks = {}
        for file in files:
            name = file.name.removesuffix(".gz").removesuffix(".json")
            tasks[name] = task_from_json(name, _read_json(file), str(file))
        return tasks
    if not path.is_file():
        raise FileNotFoundError(f"ARC task file or directory {path} does not exist")
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{path}: expected a JSON object {{task_id: task}} with at least one task")
    solutions: dict[str, Any] = {}
    if "_challenges" in path.name:
        sibling = path.with_name(path.name.replace("_challenges", "_solutions"))
        if sibling.is_file():
            solutions = _read_json(sibling)
    tasks = {}
    for name in sorted(data):
        obj = data[name]
        if name in solutions and isinstance(obj, dict):
            outputs = solutions[name]
            tests = obj.get("test", [])
            if not isinstance(outputs, list) or len(outputs) != len(tests):
                raise ValueError(f"{path}: task {name} has {len(tests)} test inputs but its solutions do not match")
            obj = {**obj, "test": [{**t, "output": o} for t, o in zip(tests, outputs)]}
        tasks[name] = task_from_json(name, obj, str(path))
    return tasks


# ----------------------------------------------------------------------------------------------------------------
# Augmentations


def apply_augmentation(grid: np.ndarray, augmentation: np.ndarray) -> np.ndarray:
    """Transform a colour grid [h, w] by augmentation row [k, colours...]: dihedral k, then recolour."""
    return augmentation[1:][dihedral(grid, int(augmentation[0]))]


def restore(grid: np.ndarray, augmentation: np.ndarray) -> np.ndarray:
    """Undo `apply_augmentation`: ``restore(apply_augmentation(g, a), a) == g``."""
    inverse = np.argsort(augmentation[1:]).astype(np.uint8)
    return np.ascontiguousarray(inverse_dihedral(inverse[grid], int(augmentation[0])))


def augmentation_name(augmentation: np.ndarray) -> str:
    """A short readable name: 't<k>_<colours of 1..9>', e.g. 't0_123456789' for the identity."""
    return f"t{int(augmentation[0])}_" + "".join(str(int(c)) for c in augmentation[2:])


def plan_augmentations(task: Task, count: int, rng: np.random.Generator, tries_per_augmentation: int = 5) -> np.ndarray:
    """The identity plus up to `count` distinct random augmentations of a task, as uint8 rows [m, 11].

    Each candidate is a uniform dihedral transform and a uniform permutation of colours 1..9; a candidate is
    rejected when it turns the task into one already kept (the same grids, e.g. a symmetric task, or a permutation of
    colours the task does not use). At most ``tries_per_augmentation * count`` candidates are drawn.
    """
    grids = task.grids()
    transformed = [np.concatenate([dihedral(g, k).reshape(-1) for g in grids]) for k in range(8)]
    shapes = [np.array([dihedral(g, k).shape for g in grids], dtype=np.uint8).tobytes() for k in range(8)]
    kept = [IDENTITY]
    seen = {shapes[0] + IDENTITY[1:][transformed[0]].tobytes()}
    remaining = tries_per_augmentation * count
    while remaining > 0 and len(kept) <= count:
        block = min(remaining, 1024)
        remaining -= block
        candidates = np.empty((block, 11), dtype=np.uint8)
        candidates[:, 0] = rng.integers(8, size=block)
        candidates[:, 1] = 0
        candidates[:, 2:] = rng.permuted(np.tile(np.arange(1, 10, dtype=np.uint8), (block, 1)), axis=1)
        contents = {k: candidates[candidates[:, 0] == k, 1:][:, transformed[k]] for k in range(8)}
        position = dict.fromkeys(range(8), 0)
        for augmentation in candidates:
            k = int(augmentation[0])
            key = shapes[k] + contents[k][position[k]].tobytes()
            position[k] += 1
            if key not in seen and len(kept) <= count:
                seen.add(key)
                kept.append(augmentation)
    return np.stack(kept)


# ----------------------------------------------------------------------------------------------------------------
# Canvas encoding and decoding


def encode(
    bank: np.ndarray, shapes: np.ndarray, grid_ids: np.ndarray, augmentations: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """Render a batch of augmented grids onto 30x30 canvases as tokens, vectorised over the batch.

    Args:
        bank: Colour grids uint8 [G, 30, 30], each grid at the top-left corner.
        shapes: Heights and widths int [G, 2].
        grid_ids: Which grid of the bank, int [B].
        augmentations: Augmentation rows uint8 [B, 11] ([k, colours...]).
        offsets: Row and column offset of the transformed grid on the canvas, int [B, 2] (must fit).

    Returns:
        Tokens int64 [B, 900], row-major.
    """
    k = augmentations[:, 0].astype(np.int64)[:, None, None]
    h, w = (shapes[grid_ids, 0].astype(np.int64)[:, None, None], shapes[grid_ids, 1].astype(np.int64)[:, None, None])
    swap = np.asarray(SWAPS_AXES)[k]
    th, tw = np.where(swap, w, h), np.where(swap, h, w)  # shape of the transformed grid
    rows = np.arange(CANVAS)[None, :, None] - offsets[:, 0, None, None]
    cols = np.arange(CANVAS)[None, None, :] - offsets[:, 1, None, None]
    inside = (rows >= 0) & (rows < th) & (cols >= 0) & (cols < tw)
    i, j = rows, cols
    # Source cell (si, sj) of target cell (i, j) for each transform (see `datamodules.dihedral`).
    si = np.select(
        [k == 0, k == 1, k == 2, k == 3, k == 4, k == 5, k == 6],
        [i, j, h - 1 - i, h - 1 - j, i, h - 1 - i, j],
        h - 1 - j,
    )
    sj = np.select(
        [k == 0, k == 1, k == 2, k == 3, k == 4, k == 5, k == 6],
        [j, w - 1 - i, w - 1 - j, i, w - 1 - j, j, i],
        w - 1 - i,
    )
    si, sj = np.where(inside, si, 0), np.where(inside, sj, 0)
    colour = bank[grid_ids[:, None, None], si, sj]
    colour = np.take_along_axis(augmentations[:, 1:].astype(np.int64), colour.reshape(len(grid_ids), -1), axis=1)
    tokens = np.where(inside.reshape(len(grid_ids), -1), colour + COLOUR_OFFSET, PAD)
    eos = ((rows == th) & (cols >= 0) & (cols < tw)) | ((cols == tw) & (rows >= 0) & (rows < th))
    return np.where(eos.reshape(len(grid_ids), -1), EOS, tokens).astype(np.int64)


def crop_batch(tokens: np.ndarray) -> np.ndarray:
    """Height and width int [B, 2] of the largest top-left rectangle of colour tokens on each canvas [B, 900].

    Rows are scanned top-down; the usable width shrinks to the run of colour tokens at the start of each row, and the
    first rectangle of largest area wins (the reference evaluator's rule). A canvas without a colour token in its
    first cell gives 0x0.
    """
    grid = np.asarray(tokens).reshape(-1, CANVAS, CANVAS)
    colour = (grid >= COLOUR_OFFSET) & (grid < COLOUR_OFFSET + 10)
    runs = np.where(colour.all(axis=2), CANVAS, colour.argmin(axis=2))  # [B, 30] colour run from column 0 per row
    widths = np.minimum.accumulate(runs, axis=1)
    areas = widths * np.arange(1, CANVAS + 1)[None, :]
    best = areas.argmax(axis=1)
    height = np.where(areas.max(axis=1) > 0, best + 1, 0)
    width = np.where(height > 0, widths[np.arange(len(grid)), best], 0)
    return np.stack([height, width], axis=1)


def crop(tokens: np.ndarray) -> np.ndarray:
    """The predicted colour grid uint8 [h, w] of one canvas [900] (see `crop_batch`); may be empty (0x0)."""
    h, w = crop_batch(np.asarray(tokens)[None])[0]
    return (np.asarray(tokens).reshape(CANVAS, CANVAS)[:h, :w] - COLOUR_OFFSET).astype(np.uint8)
