"""ARC-AGI data for Lightning: task sets, about 1000 augmented copies per task with their own puzzle ids, on-the-fly
canvas encoding, and the voting evaluator.

Splits (spec section 7, transductive): every demonstration pair of every task trains, and so do the test pairs of the
training sets; the test pairs of the evaluation set are the test split, and validation is the test split of the
first `val_tasks` evaluation tasks. Each task gets the identity and up to `augmentations` distinct random
augmentations (dihedral x permutation of colours 1..9), each a puzzle id of its own; the evaluation tasks' copies
train on their demonstrations under the same ids the test inputs use. Training pairs are translated on the canvas,
except one pair per puzzle id, left at the origin (the reference builder's choice).
Ids are planned from the seed and each task's name, so the same data always gets the same ids; the map is saved with
every checkpoint and checked when one is loaded. The plan is cached as .npz under cache_dir, keyed by the task files'
contents, the planning options and this module's code, so a second run with the same inputs skips it.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

from datamodules import arc_rules as rules
from datamodules.arc_eval import ARCEvaluator
from datamodules.base import PuzzleDataModule
from datamodules.dataset import Batch, PuzzleDataset
from datamodules.dihedral import SWAPS_AXES
from datamodules.kinds import ARCKind
from recursive_reasoning.core.files import atomic_write

__all__ = ["ARC", "ARCDataset", "PuzzleIdMap", "resolve_task_set"]

IGNORE_LABEL = -100  # label of PAD cells: not scored (the loss's ignore index)
_MAX_COPIED_FRACTION = 0.05  # more evaluation tasks than this found whole in training: refuse (a leak, not chance)
_SOURCES = (
    "ARC-AGI-1: https://github.com/fchollet/ARC-AGI (data/training, data/evaluation); "
    "ARC-AGI-2: https://github.com/arcprize/ARC-AGI-2 (data/training, data/evaluation); "
    "ConceptARC: https://github.com/victorvikram/ConceptARC (corpus)"
)


def resolve_task_set(data_dir: Path, name: str) -> Path:
    """The file or directory of a task set: data_dir/name as a directory, or with .json, .json.gz or a Kaggle
    ``_challenges.json(.gz)`` suffix.

    Raises:
        FileNotFoundError: listing every path tried and where the public data lives.
    """
    base = data_dir / name
    candidates = [base] + [base.with_name(base.name + suffix) for suffix in (
        ".json", ".json.gz", "_challenges.json", "_challenges.json.gz")]
    for path in candidates:
        if path.is_dir() or path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"ARC task set {name!r} not found (tried {tried}). Put the task JSON there: a directory of <task_id>.json "
        f"files or one combined {{task_id: task}} file. Sources: {_SOURCES}"
    )


def task_set_digest(path: Path) -> str:
    """sha1 of the bytes a task set is read from: a directory's task files (with their names), or the file and a Kaggle
    solutions file beside it."""
    digest = hashlib.sha1()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith((".json", ".json.gz")))
    else:
        sibling = path.with_name(path.name.replace("_challenges", "_solutions"))
        files = [path, sibling] if "_challenges" in path.name and sibling.is_file() else [path]
    for file in files:
        digest.update(file.name.encode() + b"\0" + hashlib.sha1(file.read_bytes()).digest())
    return digest.hexdigest()


_PLAN_CODE = hashlib.sha1(Path(__file__).read_bytes() + Path(rules.__file__).read_bytes()).hexdigest()
_PLAN_ARRAYS = ("bank", "shapes", "train", "train_origin", "test", "rank_of_id", "train_pair_hashes",
                "test_pair_hashes")


def _pair_hash(pair: rules.Pair) -> int:
    """A 63-bit fingerprint of a pair's grids (shapes and colours)."""
    digest = hashlib.sha1()
    for grid in (pair.input, pair.output):
        if grid is not None:
            digest.update(np.array(grid.shape, dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(grid).tobytes())
    return int.from_bytes(digest.digest()[:8], "little") >> 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of uint64 values: a counter-based hash for per-example random draws."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class PuzzleIdMap:
    """Puzzle id <-> (task, augmentation). Id 0 is the blank puzzle (no task; its embedding stays zero), as in the
    reference; ids 1.. are the augmented copies, task by task.

    Args:
        task_names: Qualified task names, '<set>:<task id>'.
        task_of_id: Task index of every id, int [P] (-1 for the blank id 0).
        augmentations: Augmentation row of every id, uint8 [P, 11] (the identity for id 0).
    """

    def __init__(self, task_names: list[str], task_of_id: np.ndarray, augmentations: np.ndarray) -> None:
        self.task_names = list(task_names)
        self.task_of_id = np.asarray(task_of_id, dtype=np.int32)
        self.augmentations = np.asarray(augmentations, dtype=np.uint8)

    def __len__(self) -> int:
        """Number of ids, the blank one included."""
        return len(self.task_of_id)

    def name(self, puzzle_id: int) -> str:
        """'<set>:<task>|t<k>_<colours>' of an id, or '<blank>' for id 0."""
        task = int(self.task_of_id[puzzle_id])
        if task < 0:
            return "<blank>"
        return f"{self.task_names[task]}|{rules.augmentation_name(self.augmentations[puzzle_id])}"

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (loads with torch.load(weights_only=True))."""
        return {
            "task_names": self.task_names,
            "task_of_id": torch.from_numpy(self.task_of_id.copy()),
            "augmentations": torch.from_numpy(self.augmentations.copy()),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PuzzleIdMap:
        """Rebuild a map saved by `state_dict`."""
        return cls(state["task_names"], np.asarray(state["task_of_id"]), np.asarray(state["augmentations"]))

    def difference(self, other: PuzzleIdMap) -> str | None:
        """None when both maps give every id the same name; else a description of the first difference."""
        if len(self) != len(other):
            return f"{len(other)} puzzle ids against {len(self)}"
        names_differ = self.task_names != other.task_names
        rows = np.flatnonzero(
            (self.task_of_id != other.task_of_id) | (self.augmentations != other.augmentations).any(axis=1)
        )
        if len(rows) == 0 and not names_differ:
            return None
        first = int(rows[0]) if len(rows) else int(np.argmax(self.task_of_id >= 0))
        return f"id {first} is {other.name(first)!r} there but {self.name(first)!r} here"


class ARCDataset(PuzzleDataset):
    """Examples (puzzle id, input grid, output grid) rendered on the 30x30 canvas on the fly, a whole batch at once.

    Batches carry ``example_ids`` (the index in this dataset) for the evaluator. Translation offsets are drawn per
    example from a counter-based hash of (seed, index), so an example always sits at the same place; examples marked
    in `origin` stay at the origin.

    Args:
        bank: Colour grids uint8 [G, 30, 30] at the top-left corner; shapes int [G, 2].
        rows: int [N, 3+]: puzzle id, input grid, output grid (-1: no output, labels all ignored).
        augmentations: Augmentation row of every puzzle id, uint8 [P, 11].
        translate: Place each pair at a random offset where both its grids (and their EOS marks) fit.
        seed: Seed of the translations.
        origin: bool [N], examples kept at the origin when translating; None translates all.
    """

    def __init__(
        self,
        bank: np.ndarray,
        shapes: np.ndarray,
        rows: np.ndarray,
        augmentations: np.ndarray,
        translate: bool,
        seed: int,
        origin: np.ndarray | None = None,
    ) -> None:
        if origin is not None and origin.shape != (len(rows),):
            raise ValueError(f"origin must flag each of the {len(rows)} examples, got shape {origin.shape}")
        self.bank, self.shapes, self.rows, self.augmentations = bank, shapes, rows, augmentations
        self.translate, self.seed, self.origin = translate, seed, origin

    def __len__(self) -> int:
        """Number of examples."""
        return len(self.rows)

    def _offsets(self, idx: np.ndarray, rows: np.ndarray, augmentations: np.ndarray) -> np.ndarray:
        if not self.translate:
            return np.zeros((len(idx), 2), dtype=np.int64)
        swap = np.asarray(SWAPS_AXES)[augmentations[:, 0]]
        extent = self.shapes[rows[:, 1]].astype(np.int64)
        out = rows[:, 2] >= 0
        extent = np.where(out[:, None], np.maximum(extent, self.shapes[np.maximum(rows[:, 2], 0)]), extent)
        extent = np.where(swap[:, None], extent[:, ::-1], extent)
        room = rules.CANVAS - extent + 1  # offsets 0 .. 30 - size
        key = (idx.astype(np.uint64) * np.uint64(2)) ^ (np.uint64(self.seed & 0xFFFFFFFF) << np.uint64(32))
        draws = np.stack([_mix(key), _mix(key + np.uint64(1))], axis=1)
        offsets = (draws % room.astype(np.uint64)).astype(np.int64)
        if self.origin is not None:
            offsets[self.origin[idx]] = 0
        return offsets

    def __getitems__(self, indices: list[int]) -> Batch:
        """The batch of `indices`: inputs and labels [B, L=900], puzzle_ids and example_ids [B]."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range for a dataset of {len(self)} examples")
        rows = self.rows[idx]
        augmentations = self.augmentations[rows[:, 0]]
        offsets = self._offsets(idx, rows, augmentations)
        inputs = rules.encode(self.bank, self.shapes, rows[:, 1], augmentations, offsets)
        labels = rules.encode(self.bank, self.shapes, np.maximum(rows[:, 2], 0), augmentations, offsets)
        labels[(labels == rules.PAD) | (rows[:, 2:3] < 0)] = IGNORE_LABEL
        return self.batch(inputs, labels, rows[:, 0], idx)


class ARC(PuzzleDataModule):
    """ARC-AGI-1 / ARC-AGI-2 / ConceptARC tasks with per-task augmentations and puzzle ids (spec sections 7, 8).

    Validation and test score with `ARCEvaluator` (crop, undo the augmentation, vote over the copies: pass@k, and a
    submission JSON of the top 2 answers per test input under the log directory).

    Args:
        data_dir: Directory the task sets are found in.
        train_sets: Task sets whose every pair trains (paths under data_dir: a directory of <task_id>.json, a
            combined {task_id: task} .json / .json.gz, or a Kaggle *_challenges file with its *_solutions beside it).
        eval_set: The evaluation set: its demonstration pairs train, its test pairs are the test split.
        augmentations: Random augmentations per task on top of the identity (duplicates rejected, so tasks with few
            colours or symmetric grids get fewer).
        translate: Translate training pairs to a random place on the canvas.
        origin_pair: With translate, leave one training pair of every puzzle id, chosen at random (seeded per task
            name), at the canvas origin, as the reference builder does (TinyRecursiveModels
            dataset/build_arc_dataset.py: no_aug_id); False translates every training pair.
        val_tasks: Validation scores the test inputs of the first val_tasks evaluation tasks; None uses all.
        val_augmentations: Copies per test input used in validation (identity first); None uses all.
        max_tasks: Use only the first max_tasks tasks (by name) of every set (tests, demos); None uses all.
        batch_size: Global training batch size (over all devices; docs/scaling.md).
        eval_batch_size: Batch size for validation, test and prediction; None uses batch_size.
        num_workers: DataLoader worker processes.
        seed: Seed of the augmentation plan, the translations and the shuffling.
        cache_dir: Directory for the cached plan (keyed by the task files' contents, train_sets, eval_set,
            augmentations, max_tasks, seed and the planning code); None plans on every run.
    """

    def __init__(
        self,
        data_dir: str = "data",
        train_sets: list[str] | None = None,
        eval_set: str = "arc-agi-1/evaluation",
        augmentations: int = 1000,
        translate: bool = True,
        origin_pair: bool = True,
        val_tasks: int | None = 32,
        val_augmentations: int | None = None,
        max_tasks: int | None = None,
        batch_size: int = 768,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = ".cache/rr",
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        train_sets = list(train_sets) if train_sets is not None else ["arc-agi-1/training", "conceptarc/corpus"]
        if eval_set in train_sets:
            raise ValueError(f"eval_set {eval_set!r} is also in train_sets; its test pairs would be trained on")
        if len(set(train_sets)) != len(train_sets):
            raise ValueError(f"train_sets lists a set twice: {train_sets}")
        for name, value in (("augmentations", augmentations), ("val_tasks", val_tasks),
                            ("val_augmentations", val_augmentations), ("max_tasks", max_tasks)):
            if value is not None and value < (0 if name == "augmentations" else 1):
                raise ValueError(f"{name} must be >= {0 if name == 'augmentations' else 1}, got {value}")
        self.data_dir = Path(data_dir)
        self.train_sets = train_sets
        self.eval_set = eval_set
        self.augmentations = augmentations
        self.translate = translate
        self.origin_pair = origin_pair
        self.val_tasks = val_tasks
        self.val_augmentations = val_augmentations
        self.max_tasks = max_tasks
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._plan: dict[str, Any] | None = None
        self.save_hyperparameters()

    # --- metadata ----------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """PAD, EOS and the 10 colours."""
        return rules.VOCAB_SIZE

    @property
    def seq_len(self) -> int:
        """The 30x30 canvas."""
        return rules.CANVAS * rules.CANVAS

    @property
    def num_puzzle_ids(self) -> int:
        """Rows of the puzzle-embedding table: the blank id and one per augmented copy of every task."""
        return len(self.puzzle_map)

    @property
    def puzzle_map(self) -> PuzzleIdMap:
        """The puzzle id <-> (task, augmentation) map of these settings."""
        return self._planned()["map"]

    # --- planning ----------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Check every task set exists (there is no download: the sets come from their GitHub repositories)."""
        for name in (*self.train_sets, self.eval_set):
            resolve_task_set(self.data_dir, name)

    def _read_set(self, name: str) -> list[rules.Task]:
        tasks = list(rules.read_tasks(resolve_task_set(self.data_dir, name)).values())
        return tasks if self.max_tasks is None else tasks[: self.max_tasks]

    def _planned(self) -> dict[str, Any]:
        """The plan of ids and examples: from memory, else the cache when its key matches, else built (and cached)."""
        if self._plan is not None:
            return self._plan
        try:
            key = None if self.cache_dir is None else self._plan_key()
        except FileNotFoundError:  # planning names the first problem, in the order the sets are read
            key = None
        if key is None or self.cache_dir is None:
            self._plan = self._build_plan()
            return self._plan
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = self.cache_dir / f"arc_plan_a{self.augmentations}_s{self.seed}_{digest}.npz"
        self._plan = self._load_plan(path, key)
        if self._plan is None:
            self._plan = self._build_plan()
            self._save_plan(path, key, self._plan)
        return self._plan

    def _plan_key(self) -> dict[str, Any]:
        """Every input of the plan: each set's name and content digest, the planning options and the code."""
        names = (*self.train_sets, self.eval_set)
        sets = {name: task_set_digest(resolve_task_set(self.data_dir, name)) for name in names}
        return {"train_sets": self.train_sets, "eval_set": self.eval_set, "sets": sets,
                "augmentations": self.augmentations, "max_tasks": self.max_tasks, "seed": self.seed,
                "code": _PLAN_CODE}

    @staticmethod
    def _save_plan(path: Path, key: dict[str, Any], plan: dict[str, Any]) -> None:
        """Arrays as they are; names, the test outputs (as rows of the grid bank) and the key as JSON."""
        meta = {"key": key, "task_names": plan["map"].task_names, "eval_task_names": plan["eval_task_names"],
                "test_output_grids": plan["test_output_grids"]}
        arrays = {name: plan[name] for name in _PLAN_ARRAYS}
        atomic_write(path, lambda handle: np.savez(handle, **arrays, task_of_id=plan["map"].task_of_id,
                                                   augmentations=plan["map"].augmentations, meta=json.dumps(meta)))

    @staticmethod
    def _load_plan(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
        """The cached plan, or None when there is none, its key differs or the file cannot be read."""
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
                if meta["key"] != key:
                    return None
                plan = {name: data[name] for name in _PLAN_ARRAYS}
                plan["map"] = PuzzleIdMap(meta["task_names"], data["task_of_id"], data["augmentations"])
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return None
        bank, shapes = plan["bank"], plan["shapes"]
        plan["eval_task_names"] = meta["eval_task_names"]
        plan["test_output_grids"] = meta["test_output_grids"]
        plan["test_outputs"] = [[None if g < 0 else bank[g, : shapes[g, 0], : shapes[g, 1]].copy() for g in grids]
                                for grids in meta["test_output_grids"]]
        return plan

    def _build_plan(self) -> dict[str, Any]:
        """Read the sets, check the evaluation set does not leak into training, and plan ids and examples."""
        sets = [(name, self._read_set(name)) for name in (*self.train_sets, self.eval_set)]
        eval_tasks = sets[-1][1]
        train_hashes = {_pair_hash(p) for _, tasks in sets[:-1] for t in tasks for p in (*t.train, *t.test)}
        copied = [t.name for t in eval_tasks if all(_pair_hash(p) in train_hashes for p in (*t.train, *t.test))]
        if len(copied) > _MAX_COPIED_FRACTION * len(eval_tasks):
            raise ValueError(
                f"{len(copied)} of the {len(eval_tasks)} tasks of the evaluation set {self.eval_set!r} appear whole in "
                f"the training sets {self.train_sets} (e.g. {copied[:3]}), so the score would be meaningless. ARC-AGI-2 "
                "training contains most ARC-AGI-1 evaluation tasks: do not train on ARC-AGI-2 and evaluate on ARC-AGI-1"
            )
        test_hashes = {_pair_hash(p): t.name for t in eval_tasks for p in t.test if p.output is not None}
        shared = sorted({test_hashes[h] for h in test_hashes.keys() & train_hashes})
        if shared:
            rank_zero_warn(
                f"{len(shared)} evaluation tasks of {self.eval_set!r} have a test pair that also appears in a training "
                f"task ({shared[:5]}); the public sets hold a few such duplicates, and the reference trains on them too"
            )
        grids: list[np.ndarray] = []

        def add(grid: np.ndarray | None) -> int:
            if grid is None:
                return -1
            grids.append(grid)
            return len(grids) - 1

        task_names: list[str] = []
        task_of_id = [np.full(1, -1, dtype=np.int32)]
        augmentation_rows = [rules.IDENTITY[None]]
        rank_of_id = [np.zeros(1, dtype=np.int64)]
        train_rows: list[np.ndarray] = []
        train_origin: list[np.ndarray] = []
        test_rows: list[np.ndarray] = []
        test_outputs: list[list[np.ndarray | None]] = []
        test_output_grids: list[list[int]] = []
        next_id = 1
        for set_index, (set_name, tasks) in enumerate(sets):
            is_eval = set_index == len(sets) - 1
            for task in tasks:
                qualified = f"{set_name}:{task.name}"
                entropy = int.from_bytes(hashlib.sha1(qualified.encode()).digest()[:8], "little")
                plan = rules.plan_augmentations(task, self.augmentations, np.random.default_rng([self.seed, entropy]))
                ids = np.arange(next_id, next_id + len(plan))
                next_id += len(plan)
                task_index = len(task_names)
                task_names.append(qualified)
                task_of_id.append(np.full(len(plan), task_index, dtype=np.int32))
                augmentation_rows.append(plan)
                rank_of_id.append(np.arange(len(plan)))
                train_pairs = task.train if is_eval else (*task.train, *(p for p in task.test if p.output is not None))
                # the pair of each id that stays at the origin (its own stream of the task's seed)
                origin_rng = np.random.default_rng([self.seed, entropy, 1])
                kept = origin_rng.integers(0, max(1, len(train_pairs)), len(ids))
                for pair_index, pair in enumerate(train_pairs):
                    grid_in, grid_out = add(pair.input), add(pair.output)
                    train_rows.append(np.stack([ids, np.full_like(ids, grid_in), np.full_like(ids, grid_out)], 1))
                    train_origin.append(kept == pair_index)
                if is_eval:
                    test_outputs.append([p.output for p in task.test])
                    test_output_grids.append([])
                    for pair_index, pair in enumerate(task.test):
                        grid_in, grid_out = add(pair.input), add(pair.output)
                        test_output_grids[-1].append(grid_out)
                        columns = [ids, np.full_like(ids, grid_in), np.full_like(ids, grid_out),
                                   np.full_like(ids, len(test_outputs) - 1), np.full_like(ids, pair_index)]
                        test_rows.append(np.stack(columns, 1))
        bank = np.zeros((len(grids), rules.CANVAS, rules.CANVAS), dtype=np.uint8)
        shapes = np.zeros((len(grids), 2), dtype=np.int64)
        for i, grid in enumerate(grids):
            bank[i, : grid.shape[0], : grid.shape[1]] = grid
            shapes[i] = grid.shape
        puzzle_map = PuzzleIdMap(task_names, np.concatenate(task_of_id), np.concatenate(augmentation_rows))
        test = np.concatenate(test_rows) if test_rows else np.zeros((0, 5), dtype=np.int64)
        return {
            "map": puzzle_map,
            "bank": bank,
            "shapes": shapes,
            "train": np.concatenate(train_rows),
            "train_origin": np.concatenate(train_origin),
            "test": test,
            "rank_of_id": np.concatenate(rank_of_id),
            "eval_task_names": [t.name for t in eval_tasks],
            "test_outputs": test_outputs,
            "test_output_grids": test_output_grids,
            "train_pair_hashes": np.array(sorted(train_hashes | {
                _pair_hash(p) for t in eval_tasks for p in t.train}), dtype=np.int64),
            "test_pair_hashes": np.array(sorted(test_hashes), dtype=np.int64),
        }

    def _split_rows(self, split: str) -> np.ndarray:
        plan = self._planned()
        if split != "val":
            return plan[split]
        test = plan["test"]
        keep = np.ones(len(test), dtype=bool)
        if self.val_tasks is not None:
            keep &= test[:, 3] < self.val_tasks
        if self.val_augmentations is not None:
            keep &= plan["rank_of_id"][test[:, 0]] < self.val_augmentations
        return test[keep]

    def build_datasets(self) -> dict[str, ARCDataset]:
        """The planned examples: training translated (with `translate`), validation and test as planned."""
        plan = self._planned()
        if len(plan["test"]) == 0:
            raise ValueError(f"the evaluation set {self.eval_set!r} has no test pairs")
        origin = plan["train_origin"] if self.origin_pair else None
        return {
            split: ARCDataset(plan["bank"], plan["shapes"], self._split_rows(split), plan["map"].augmentations,
                              translate=self.translate and split == "train", seed=self.seed,
                              origin=origin if split == "train" else None)
            for split in ("train", "val", "test")
        }

    # --- evaluation --------------------------------------------------------------------------------------------

    @property
    def puzzle_kind(self) -> ARCKind:
        """ARC task JSON, with this run's puzzle-id map (so `rr solve` uses a known task's own ids)."""
        return ARCKind(self.puzzle_map)

    def evaluator(self, stage: str) -> ARCEvaluator:
        """A fresh voting evaluator over the examples of the 'val' or 'test' split."""
        plan = self._planned()
        rows = self._split_rows(stage)
        return ARCEvaluator(
            task_names=plan["eval_task_names"],
            test_outputs=plan["test_outputs"],
            example_task=rows[:, 3],
            example_pair=rows[:, 4],
            example_augmentation=plan["map"].augmentations[rows[:, 0]],
        )

    # --- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the puzzle-id map and fingerprints of every pair the model trained on."""
        plan = self._planned()
        return {
            **super().state_dict(),
            "puzzle_map": plan["map"].state_dict(),
            "train_sets": list(self.train_sets),
            "eval_set": self.eval_set,
            "train_pair_hashes": torch.from_numpy(plan["train_pair_hashes"]),
        }

    def check_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint trained on these test pairs, or with a different puzzle-id map (no silent reset).

        Raises:
            ValueError: naming the problem and what to change.
        """
        state = checkpoint.get(type(self).__qualname__)
        if state is None:
            raise ValueError(
                "the checkpoint holds no ARC puzzle-id map (it was not trained with the ARC data module), so its "
                "puzzle embeddings cannot be matched to these tasks; use a checkpoint trained with datamodules.ARC"
            )
        plan = self._planned()
        trained = set(np.asarray(state["train_pair_hashes"]).tolist())
        leaked = (trained - set(plan["train_pair_hashes"].tolist())) & set(plan["test_pair_hashes"].tolist())
        if len(leaked) > _MAX_COPIED_FRACTION * len(plan["test_pair_hashes"]):
            raise ValueError(
                f"the checkpoint was trained on data holding {len(leaked)} test pairs of {self.eval_set!r} "
                f"(its training sets: {state.get('train_sets')}); evaluating it here would be meaningless. "
                "ARC-AGI-2 training contains most ARC-AGI-1 evaluation tasks: evaluate such a model on ARC-AGI-2"
            )
        difference = plan["map"].difference(PuzzleIdMap.from_state_dict(state["puzzle_map"]))
        if difference is not None:
            raise ValueError(
                f"the checkpoint's puzzle-id map differs from this data module's ({difference}); the puzzle "
                "embeddings would belong to other puzzles. Use the data settings of the training run (data_dir, "
                "train_sets, eval_set, augmentations, max_tasks, seed)"
            )
