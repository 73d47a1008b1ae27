"""ARC-AGI tasks as a puzzle kind: every test input is a puzzle on the 30x30 canvas (tokens 0 PAD, 1 EOS, 2 + c
colour c); the grid rules and augmentations live in `datamodules.arc_rules`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import json

import numpy as np

from datamodules import arc_rules
from datamodules.kinds.base import Inverse, Puzzle, PuzzleKind, read_puzzle_text
from datamodules.kinds.drawing import colour_frame

__all__ = ["ARC_EOS_INDEX", "ARC_PAD_INDEX", "ARC_PALETTE", "ARCKind", "arc_token_colours"]

ARC_PALETTE = np.array(
    [
        (0, 0, 0),  # 0 black
        (0, 116, 217),  # 1 blue
        (255, 65, 54),  # 2 red
        (46, 204, 64),  # 3 green
        (255, 220, 0),  # 4 yellow
        (170, 170, 170),  # 5 grey
        (240, 18, 190),  # 6 magenta / fuchsia
        (255, 133, 27),  # 7 orange
        (127, 219, 255),  # 8 light blue / teal
        (135, 12, 37),  # 9 maroon
        (220, 220, 220),  # 10 PAD: light grey
        (80, 80, 80),  # 11 EOS: dark grey
    ],
    dtype=np.uint8,
)
"""The ARC viewer colours: indices 0..9 are the ARC colours 0..9, index 10 is PAD and 11 is EOS (the model's
tokens are 0 PAD, 1 EOS, 2 + c colour c: `arc_token_colours` maps them)."""

ARC_PAD_INDEX = 10
ARC_EOS_INDEX = 11


def arc_token_colours(tokens: np.ndarray) -> np.ndarray:
    """ARC tokens (0 PAD, 1 EOS, 2 + c colour c) as `ARC_PALETTE` indices, so token grids can be drawn."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= arc_rules.VOCAB_SIZE):
        raise ValueError(f"ARC tokens must lie in 0..{arc_rules.VOCAB_SIZE - 1}, got {tokens.min()}..{tokens.max()}")
    lut = np.array([ARC_PAD_INDEX, ARC_EOS_INDEX, *range(10)], dtype=np.int64)
    return lut[tokens.astype(np.int64)]


class ARCKind(PuzzleKind):
    """ARC task JSON: every test input is a puzzle on the 30x30 canvas; tokens 0 PAD, 1 EOS, colours 2..11.

    With the training run's puzzle-id map, a task the model trained on (by task id) is solved under its own ids and
    augmentations, as TRM evaluates; any other task gets the blank id 0 (the model never saw its demonstrations).
    """

    name = "arc"

    def __init__(self, puzzle_map: Any | None = None) -> None:
        self.puzzle_map = puzzle_map

    @property
    def vocab_size(self) -> int:
        """PAD, EOS and the 10 colours."""
        return arc_rules.VOCAB_SIZE

    @property
    def seq_len(self) -> int:
        """The 30x30 canvas."""
        return arc_rules.CANVAS * arc_rules.CANVAS

    @classmethod
    def from_init_args(cls, init_args: dict[str, Any], **context: Any) -> ARCKind:
        """With the training run's puzzle-id map when the checkpoint has one: `context['puzzle_map']`, the map itself
        or the plain data a data module saved of it (task_names, task_of_id, augmentations; what `rr solve` finds)."""
        puzzle_map = context.get("puzzle_map")
        if isinstance(puzzle_map, dict):
            puzzle_map = SimpleNamespace(task_names=list(puzzle_map["task_names"]),
                                         task_of_id=np.asarray(puzzle_map["task_of_id"]),
                                         augmentations=np.asarray(puzzle_map["augmentations"]))
        return cls(puzzle_map)

    def _ids_of(self, task_name: str) -> np.ndarray:
        """Puzzle ids of a task in the map (identity first), matched by the task id after 'set:'; empty if absent."""
        if self.puzzle_map is None:
            return np.zeros(0, dtype=np.int64)
        matches = [i for i, qualified in enumerate(self.puzzle_map.task_names)
                   if qualified.rpartition(":")[2] == task_name]
        if not matches:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.puzzle_map.task_of_id == matches[-1])

    @classmethod
    def from_shape(cls, seq_len: int, vocab_size: int) -> ARCKind:
        """ARC of a model with the 30x30 canvas (900 positions) and the 12 ARC tokens."""
        if (seq_len, vocab_size) != (arc_rules.CANVAS * arc_rules.CANVAS, arc_rules.VOCAB_SIZE):
            raise ValueError(f"ARC needs {arc_rules.CANVAS * arc_rules.CANVAS} positions and {arc_rules.VOCAB_SIZE} "
                             f"tokens; the model has {seq_len} positions and {vocab_size} tokens")
        return cls()

    def parse(self, text: str, name: str = "task") -> list[Puzzle]:
        """Every test input of a task JSON or of a {task_id: task} file; a bare grid ([[...], ...], what `compact`
        writes) is one puzzle without demonstrations (id 0)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}: not valid JSON ({err})") from None
        if isinstance(data, list):
            return [Puzzle(inputs=_canvas(arc_rules.to_grid(data, name)), name=name)]
        tasks = data if isinstance(data, dict) and "train" not in data else {name: data}
        if not tasks:
            raise ValueError(f"{name}: holds no ARC task (an empty JSON object); give a task "
                             '{"train": [{"input": ..., "output": ...}], "test": [{"input": ...}]} or {task_id: task}')
        puzzles = []
        for task_name, obj in tasks.items():
            task = arc_rules.task_from_json(task_name, obj, name)
            if not task.test:
                raise ValueError(f"{name}: task {task_name} has no test inputs, so there is nothing to solve; add "
                                 '"test": [{"input": [[...]]}] to it')
            ids = self._ids_of(task_name)
            for index, pair in enumerate(task.test):
                labels = None if pair.output is None else _canvas(pair.output)
                puzzles.append(Puzzle(inputs=_canvas(pair.input), name=f"{task_name}[{index}]",
                                      puzzle_id=int(ids[0]) if len(ids) else 0, labels=labels))
        return puzzles

    def read_file(self, path: str | Path) -> list[Puzzle]:
        """One task JSON (named by the file), a combined {task_id: task} file, a Kaggle challenges file (with its
        solutions beside it) or a directory of task files."""
        path = Path(path)
        if path.is_dir() or "_challenges" in path.name:
            tasks = arc_rules.read_tasks(path)
            return self.parse(json.dumps({name: _task_json(task) for name, task in tasks.items()}), name=path.name)
        text = read_puzzle_text(path, "ARC task file")
        name = path.name.removesuffix(".gz").removesuffix(".json")
        try:
            return self.parse(text, name=name)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def compact(self, tokens: np.ndarray) -> str:
        """The grid as compact JSON rows, e.g. [[1,2],[3,4]]."""
        return json.dumps(arc_rules.crop(np.asarray(tokens)).tolist(), separators=(",", ":"))

    def text(self, inputs: np.ndarray, tokens: np.ndarray) -> str:
        grid = arc_rules.crop(np.asarray(tokens))
        return "\n".join("".join(str(int(c)) for c in row) for row in grid) if grid.size else "(empty grid)"

    def frame(self, inputs: np.ndarray, tokens: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """The whole 30x30 canvas in `ARC_PALETTE` colours (PAD and EOS grey), changed cells outlined."""
        tokens = np.asarray(tokens)
        side = arc_rules.CANVAS
        changed = None if previous is None else (np.asarray(previous) != tokens).reshape(side, side)
        return colour_frame(arc_token_colours(tokens).reshape(side, side), ARC_PALETTE, changed, cell=8)

    def transforms(
        self, inputs: np.ndarray, puzzle_ids: np.ndarray, copies: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, Inverse]:
        """A task in the map uses its own first `copies` augmentations and their ids; others random ones, id 0."""
        size = len(inputs)
        grids = [arc_rules.crop(row) for row in inputs]
        bank, shapes = _bank(grids)
        augmentations = np.empty((copies, size, 11), dtype=np.uint8)
        ids = np.zeros((copies, size), dtype=np.int64)
        for b in range(size):
            own = np.zeros(0, dtype=np.int64)
            if self.puzzle_map is not None and puzzle_ids[b] > 0:
                task = self.puzzle_map.task_of_id[puzzle_ids[b]]
                own = np.flatnonzero(self.puzzle_map.task_of_id == task)
            for p in range(copies):
                if p < len(own):
                    augmentations[p, b], ids[p, b] = self.puzzle_map.augmentations[own[p]], own[p]
                elif p == 0:
                    augmentations[p, b] = arc_rules.IDENTITY
                else:
                    augmentations[p, b] = np.concatenate([[rng.integers(8), 0], 1 + rng.permutation(9)])
        zero = np.zeros((size, 2), dtype=np.int64)
        moved = np.stack([arc_rules.encode(bank, shapes, np.arange(size), augmentations[p], zero)
                          for p in range(copies)])

        def inverse(answers: np.ndarray) -> np.ndarray:
            out = np.empty_like(answers)
            for p in range(copies):
                restored = [arc_rules.restore(arc_rules.crop(answers[p, b]), augmentations[p, b]) for b in range(size)]
                for b, grid in enumerate(restored):
                    out[p, b] = _canvas(grid) if grid.size else arc_rules.PAD
            return out

        return moved, ids, inverse


def _canvas(grid: np.ndarray) -> np.ndarray:
    """The tokens [900] of one colour grid [h, w] on the canvas, untransformed at the top-left corner."""
    bank, shapes = _bank([grid])
    return arc_rules.encode(bank, shapes, np.array([0]), arc_rules.IDENTITY[None], np.zeros((1, 2), dtype=np.int64))[0]


def _bank(grids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    bank = np.zeros((len(grids), arc_rules.CANVAS, arc_rules.CANVAS), dtype=np.uint8)
    shapes = np.zeros((len(grids), 2), dtype=np.int64)
    for i, grid in enumerate(grids):
        bank[i, : grid.shape[0], : grid.shape[1]] = grid
        shapes[i] = grid.shape
    return bank, shapes


def _task_json(task: arc_rules.Task) -> dict[str, Any]:
    def pair(p: arc_rules.Pair) -> dict[str, Any]:
        out = {"input": p.input.tolist()}
        if p.output is not None:
            out["output"] = p.output.tolist()
        return out

    return {"train": [pair(p) for p in task.train], "test": [pair(p) for p in task.test]}
