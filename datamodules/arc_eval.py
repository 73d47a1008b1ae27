"""ARC scoring by voting over augmented copies: pass@k per task and a Kaggle ARC Prize submission file.

Every test input of a task is evaluated as several augmented examples (dihedral transform x colour permutation). For
each example the predicted canvas is cropped (the largest top-left rectangle of colour tokens, ``arc_rules.crop``),
mapped back to the task's own frame (``arc_rules.restore``) and counted as a vote for that grid. Identical grids (same
shape and content) of one test input form a candidate; candidates are ranked by vote count, then by the mean
sigmoid(q_halt) of their votes, then by first appearance in example-id order. pass@k says whether the true output is
among the top k candidates; a task scores the fraction of its (known-output) test inputs solved at k, and pass@k is the
mean over tasks. The headline number is pass@2 on the evaluation set.

States are torchmetrics list states (concatenated across DDP ranks before `compute`) and are cleared by `reset`, so no
vote carries over from one evaluation (one checkpoint) to the next.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torchmetrics.utilities import dim_zero_cat

from datamodules.arc_rules import CANVAS, COLOUR_OFFSET, crop_batch
from datamodules.evaluator import PuzzleEvaluator
from datamodules.dihedral import SWAPS_AXES, inverse_dihedral
from recursive_reasoning.core.files import atomic_write_text

__all__ = ["ARCEvaluator", "restore_batch"]

_CELLS = CANVAS * CANVAS
_OUTSIDE = 255  # canvas cells outside a restored grid
_CHUNK = 4096  # examples restored at once: bounds the temporary memory of `compute`


@cache
def _source_cells(k: int, h: int, w: int) -> np.ndarray:
    """Where each cell of a restored canvas comes from on a predicted canvas whose crop is h x w under transform k.

    Flat cell index int16 [900]: cell i of the canonical canvas (restored grid at the top-left) is cell result[i] of
    the prediction; cells outside the restored grid point at 900, one past the canvas. Built with the dihedral
    transforms themselves, so it agrees with ``arc_rules.restore`` by construction.
    """
    restored = inverse_dihedral(np.arange(_CELLS, dtype=np.int16).reshape(CANVAS, CANVAS)[:h, :w], k)
    cells = np.full((CANVAS, CANVAS), _CELLS, dtype=np.int16)
    cells[: restored.shape[0], : restored.shape[1]] = restored
    cells.flags.writeable = False
    return cells.reshape(-1)


def restore_batch(tokens: np.ndarray, augmentations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop predicted canvases and map them back to the task's frame, vectorised over the batch.

    The same as ``arc_rules.restore(arc_rules.crop(tokens[i]), augmentations[i])`` for every row i, but returned as
    canonical canvases: the restored grid sits at the top-left of a 30x30 uint8 canvas whose other cells are 255, so
    two canvases are byte-equal exactly when their grids have the same shape and content.

    Args:
        tokens: Predicted tokens [B, 900].
        augmentations: Augmentation rows uint8 [B, 11] that produced each example.

    Returns:
        Canvases uint8 [B, 30, 30] and the restored grid shapes int [B, 2] (0x0 where the crop is empty).
    """
    tokens = np.asarray(tokens).reshape(-1, _CELLS)
    n = len(tokens)
    shape = crop_batch(tokens)
    k = augmentations[:, 0].astype(np.int64)
    # One source map per (transform, crop shape); gather every restored cell's token (PAD outside the grid).
    combos, which = np.unique(np.column_stack([k, shape]), axis=0, return_inverse=True)
    maps = np.stack([_source_cells(*combo) for combo in combos.tolist()])
    padded = np.zeros((n, _CELLS + 1), dtype=np.uint8)
    padded[:, :_CELLS] = tokens
    rows = np.arange(n, dtype=np.intp)[:, None]
    restored_tokens = np.take(padded.reshape(-1), maps[which.reshape(-1)] + rows * (_CELLS + 1))
    # Undo the colour permutation: token 2 + c -> inverse[c]; PAD (outside the grid) -> 255.
    lookup = np.full((n, COLOUR_OFFSET + 10), _OUTSIDE, dtype=np.uint8)
    lookup[:, COLOUR_OFFSET:] = np.argsort(augmentations[:, 1:], axis=1)
    flat = restored_tokens.astype(np.intp) + rows * (COLOUR_OFFSET + 10)
    canvases = np.take(lookup.reshape(-1), flat).reshape(n, CANVAS, CANVAS)
    swap = np.asarray(SWAPS_AXES)[k]
    return canvases, np.where(swap[:, None], shape[:, ::-1], shape)


class ARCEvaluator(PuzzleEvaluator):
    """Vote over the augmented copies of every ARC test input and score pass@k per task.

    Args:
        task_names: Original task id of each task t (the submission keys), distinct.
        test_outputs: test_outputs[t][p] is the true output (uint8 [h, w], colours 0..9) of test input p of task t,
            or None when unknown: such an input is not scored but still gets a submission entry.
        example_task: Task index of each evaluation example e, int [N].
        example_pair: Test input index (within its task) of each example, int [N].
        example_augmentation: Augmentation row (uint8 [11]: [k, colours...]) applied to each example, [N, 11];
            predictions are mapped back through it.
        ks: The k of each pass@k score.
        attempts: How many answers per test input the submission file holds (Kaggle ARC Prize: 2).
    """

    progress_bar = ("pass@2",)

    def __init__(
        self,
        task_names: Sequence[str],
        test_outputs: Sequence[Sequence[np.ndarray | None]],
        example_task: np.ndarray,
        example_pair: np.ndarray,
        example_augmentation: np.ndarray,
        ks: tuple[int, ...] = (1, 2, 5, 10, 100, 1000),
        attempts: int = 2,
    ) -> None:
        super().__init__()
        if len(task_names) != len(test_outputs):
            raise ValueError(f"{len(task_names)} task names but test outputs for {len(test_outputs)} tasks")
        if len(set(task_names)) != len(task_names):
            raise ValueError("task names must be distinct (they are the submission keys)")
        if not ks or any(int(k) < 1 for k in ks):
            raise ValueError(f"ks must be a non-empty tuple of positive ints, got {ks}")
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        example_task = np.asarray(example_task, dtype=np.int64).reshape(-1)
        example_pair = np.asarray(example_pair, dtype=np.int64).reshape(-1)
        augmentation = np.asarray(example_augmentation)
        n = len(example_task)
        if len(example_pair) != n or augmentation.shape != (n, 11):
            raise ValueError(
                f"example tables disagree: example_task has {n} rows, example_pair {len(example_pair)}, "
                f"example_augmentation shape {augmentation.shape} (expected ({n}, 11))"
            )
        self.task_names = [str(name) for name in task_names]
        self.ks = tuple(int(k) for k in ks)
        self.attempts = int(attempts)
        # Test inputs are numbered flat: input p of task t is number first_input[t] + p.
        counts = np.array([len(outputs) for outputs in test_outputs], dtype=np.int64)
        self._first_input = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._input_task = np.repeat(np.arange(len(counts)), counts)
        if n and (
            example_task.min() < 0
            or example_task.max() >= len(counts)
            or example_pair.min() < 0
            or np.any(example_pair >= counts[np.clip(example_task, 0, max(len(counts) - 1, 0))])
        ):
            raise ValueError("example_task / example_pair name a task or test input that test_outputs does not have")
        self._example_input = self._first_input[example_task] + example_pair if n else np.zeros(0, dtype=np.int64)
        self._augmentation = augmentation.astype(np.uint8)
        self._true: list[bytes | None] = []  # the canonical canvas bytes of each true output (see `restore_batch`)
        for t, outputs in enumerate(test_outputs):
            for p, output in enumerate(outputs):
                if output is None:
                    self._true.append(None)
                    continue
                grid = np.asarray(output)
                if grid.ndim != 2 or not (1 <= grid.shape[0] <= CANVAS and 1 <= grid.shape[1] <= CANVAS):
                    raise ValueError(
                        f"test output {p} of task {self.task_names[t]} must be a 2-d grid with sides 1..{CANVAS}, got "
                        f"shape {grid.shape}"
                    )
                if grid.min() < 0 or grid.max() > 9:
                    raise ValueError(f"test output {p} of task {self.task_names[t]} has colours outside 0..9")
                canvas = np.full((CANVAS, CANVAS), _OUTSIDE, dtype=np.uint8)
                canvas[: grid.shape[0], : grid.shape[1]] = grid
                self._true.append(canvas.tobytes())
        self._answers: list[list[np.ndarray]] | None = None

        self.add_state("example_ids", default=[], dist_reduce_fx="cat")
        self.add_state("predictions", default=[], dist_reduce_fx="cat")
        self.add_state("q_halt", default=[], dist_reduce_fx="cat")

    @property
    def num_examples(self) -> int:
        """N, the number of evaluation examples (augmented copies of test inputs)."""
        return len(self._augmentation)

    def update(self, batch: dict[str, torch.Tensor], predictions: torch.Tensor, halt_logits: torch.Tensor) -> None:
        """Store one batch: its example ids, predicted tokens [B, 900] (as uint8) and sigmoid(q_halt) [B]."""
        if "example_ids" not in batch:
            raise ValueError(
                "ARCEvaluator needs batch['example_ids'] (LongTensor [B], the evaluation example of each row); the "
                "ARC data module must provide example_ids in its evaluation batches"
            )
        ids = batch["example_ids"].reshape(-1)
        if predictions.ndim != 2 or predictions.shape[1] != _CELLS or predictions.shape[0] != len(ids):
            raise ValueError(
                f"predictions must be tokens [B, {_CELLS}] with B = {len(ids)} example ids, got shape "
                f"{tuple(predictions.shape)}"
            )
        if halt_logits.numel() != len(ids):
            raise ValueError(f"halt_logits must hold one logit per example ({len(ids)}), got {halt_logits.numel()}")
        self.example_ids.append(ids.detach().to(torch.int64))
        self.predictions.append(predictions.detach().to(torch.uint8))
        self.q_halt.append(torch.sigmoid(halt_logits.detach().reshape(-1).to(torch.float32)))

    def reset(self) -> None:
        """Clear every vote and the ranking of the last `compute`."""
        super().reset()
        self._answers = None

    def _gathered(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The states as numpy arrays (ids int64 [M], tokens uint8 [M, 900], q float32 [M]); empty when none."""
        if isinstance(self.example_ids, list) and not self.example_ids:
            return np.zeros(0, np.int64), np.zeros((0, _CELLS), np.uint8), np.zeros(0, np.float32)
        ids = dim_zero_cat(self.example_ids).cpu().numpy().astype(np.int64, copy=False).reshape(-1)
        tokens = dim_zero_cat(self.predictions).cpu().numpy().astype(np.uint8, copy=False).reshape(-1, _CELLS)
        q = dim_zero_cat(self.q_halt).cpu().numpy().astype(np.float32, copy=False).reshape(-1)
        return ids, tokens, q

    def compute(self) -> dict[str, torch.Tensor]:
        """pass@k for every k and coverage (fraction of the N examples that got a prediction), as float tensors.

        pass@k is NaN when no test input has a known output. The ranking is kept for `write`.
        """
        ids, tokens, q = self._gathered()
        n = self.num_examples
        if len(ids) and (ids.min() < 0 or ids.max() >= n):
            bad = ids[(ids < 0) | (ids >= n)][0]
            raise ValueError(f"example id {bad} is out of range: the evaluator knows {n} examples (0..{n - 1})")
        # One vote per example: the first occurrence of each id (DDP samplers pad by repeating examples), id order.
        unique_ids, first = np.unique(ids, return_index=True)
        example_input = self._example_input[unique_ids]

        candidate_of: dict[tuple[int, bytes], int] = {}
        cand_input: list[int] = []
        cand_count: list[int] = []
        cand_q: list[float] = []
        cand_grid: list[np.ndarray] = []
        for begin in range(0, len(unique_ids), _CHUNK):
            rows = first[begin : begin + _CHUNK]
            canvases, shapes = restore_batch(tokens[rows], self._augmentation[unique_ids[begin : begin + _CHUNK]])
            keys = canvases.tobytes()
            inputs = example_input[begin : begin + _CHUNK].tolist()
            for i, (test_input, qi) in enumerate(zip(inputs, q[rows].tolist())):
                key = (test_input, keys[i * _CELLS : (i + 1) * _CELLS])
                c = candidate_of.get(key)
                if c is None:
                    candidate_of[key] = len(cand_input)
                    cand_input.append(test_input)
                    cand_count.append(1)
                    cand_q.append(qi)
                    h, w = shapes[i]
                    cand_grid.append(canvases[i, :h, :w].copy())
                else:
                    cand_count[c] += 1
                    cand_q[c] += qi

        # Rank candidates within each test input: count desc, mean q desc, first appearance asc.
        num_inputs = len(self._true)
        group = np.asarray(cand_input, dtype=np.int64)
        count = np.asarray(cand_count, dtype=np.int64)
        mean_q = np.asarray(cand_q, dtype=np.float64) / np.maximum(count, 1)
        order = np.lexsort((np.arange(len(group)), -mean_q, -count, group))
        start = np.searchsorted(group[order], np.arange(num_inputs))
        rank = np.empty(len(group), dtype=np.int64)
        rank[order] = np.arange(len(group)) - start[group[order]]
        answers: list[list[np.ndarray]] = [[] for _ in range(num_inputs)]
        for c in order[rank[order] < self.attempts].tolist():
            answers[cand_input[c]].append(cand_grid[c])
        self._answers = answers

        # Rank of each true output among its input's candidates (infinite when never predicted).
        scored = np.array([true is not None for true in self._true], dtype=bool)
        true_rank = np.full(num_inputs, np.inf)
        for i, true in enumerate(self._true):
            if true is not None:
                c = candidate_of.get((i, true))
                if c is not None:
                    true_rank[i] = rank[c]
        num_tasks = len(self.task_names)
        task_scored = np.bincount(self._input_task[scored], minlength=num_tasks)
        has_scored = task_scored > 0
        result: dict[str, torch.Tensor] = {}
        for k in self.ks:
            solved = np.bincount(self._input_task[scored], weights=true_rank[scored] < k, minlength=num_tasks)
            value = float(np.mean(solved[has_scored] / task_scored[has_scored])) if has_scored.any() else float("nan")
            result[f"pass@{k}"] = torch.tensor(value, dtype=torch.float32, device=self.device)
        coverage = len(unique_ids) / n if n else 0.0
        result["coverage"] = torch.tensor(coverage, dtype=torch.float32, device=self.device)
        return result

    def submission(self) -> dict[str, list[dict[str, list[list[int]]]]]:
        """The Kaggle ARC Prize submission of the last `compute`: {task_id: [{attempt_1: grid, ...} per test input]}.

        A test input with fewer candidates than `attempts` repeats its best one; one without any prediction (or whose
        candidate is an empty crop) gets [[0]], since a submission grid must be at least 1x1.
        """
        if self._answers is None:
            raise RuntimeError("ARCEvaluator has no ranking: call compute() after the evaluation (and before reset)")
        out: dict[str, list[dict[str, list[list[int]]]]] = {}
        for t, name in enumerate(self.task_names):
            entries = []
            for i in range(int(self._first_input[t]), int(self._first_input[t + 1])):
                grids = [g.tolist() if g.size else [[0]] for g in self._answers[i]] or [[[0]]]
                grids += [grids[0]] * (self.attempts - len(grids))
                entries.append({f"attempt_{a + 1}": grid for a, grid in enumerate(grids)})
            out[name] = entries
        return out

    def write(self, directory: Path, tag: str) -> Path:
        """Write the submission of the last `compute` to directory / submission_{tag}.json, atomically."""
        text = json.dumps(self.submission(), separators=(",", ":"))
        return atomic_write_text(Path(directory) / f"submission_{tag}.json", text)
