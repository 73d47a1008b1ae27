"""ARC-AGI tasks as a puzzle kind: every test input is a puzzle on the 30x30 canvas (tokens 0 PAD, 1 EOS, 2 + c
colour c); the grid rules and augmentations live in `datamodules.arc_rules`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import json

import numpy as np

from datamodules import arc_rules
from datamodules.kinds.base import Inverse, Puzzle, PuzzleKind, read_puzzle_text

__all__ = ["ARCKind"]


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
        """With the training run's puzzle-id map (`context['puzzle_map']`) when the checkpoint has one."""
        return cls(context.get("puzzle_map"))

    def _ids_of(self, task_name: str) -> np.ndarray:
        """Puzzle ids of a task in the map (identity first), matched by the task id after 'set:'; empty if absent."""
        if self.puzzle_map is None:
            return np.zeros(0, dtype=np.int64)
        matches = [i for i, qualified in enumerate(self.puzzle_map.task_names)
                   if qualified.rpartition(":")[2] == task_name]
        if not matches:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.puzzle_map.task_of_id == matches[-1])

    def parse(self, text: str, name: str = "task") -> list[Puzzle]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{name}: not valid JSON ({err})") from None
        tasks = data if isinstance(data, dict) and "train" not in data else {name: data}
        if not tasks:
            raise ValueError(f"{name}: holds no ARC task (an empty JSON object); give a task "
                             '{"train": [{"input": ..., "output": ...}], "test": [{"input": ...}]} or {task_id: task}')
        puzzles = []
        for task_name, obj in tasks.items():
            task = arc_rules._task(task_name, obj, name)
            if not task.test:
                raise ValueError(f"{name}: task {task_name} has no test inputs, so there is nothing to solve; add "
                                 '"test": [{"input": [[...]]}] to it')
            ids = self._ids_of(task_name)
            for index, pair in enumerate(task.test):
                bank, shapes = _bank([pair.input] + ([pair.output] if pair.output is not None else []))
                zero = np.zeros((1, 2), dtype=np.int64)
                inputs = arc_rules.encode(bank, shapes, np.array([0]), arc_rules.IDENTITY[None], zero)[0]
                labels = None
                if pair.output is not None:
                    labels = arc_rules.encode(bank, shapes, np.array([1]), arc_rules.IDENTITY[None], zero)[0]
                puzzles.append(Puzzle(inputs=inputs, name=f"{task_name}[{index}]",
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
        from datamodules.kinds.drawing import ARC_PALETTE, colour_frame

        tokens = np.asarray(tokens)
        colours = np.where(tokens >= 2, tokens - 2, np.where(tokens == 1, 11, 10)).reshape(30, 30)
        changed = None if previous is None else (np.asarray(previous) != tokens).reshape(30, 30)
        return colour_frame(colours, ARC_PALETTE, changed, cell=8)

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
                    if grid.size == 0:
                        out[p, b] = arc_rules.PAD
                        continue
                    one, one_shape = _bank([grid])
                    out[p, b] = arc_rules.encode(one, one_shape, np.array([0]), arc_rules.IDENTITY[None],
                                                 np.zeros((1, 2), dtype=np.int64))[0]
            return out

        return moved, ids, inverse


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
