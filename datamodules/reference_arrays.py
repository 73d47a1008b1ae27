"""Data directories built by the reference code (TRM / HRM ``dataset/build_*_dataset.py``) read as an rr data module.

Such a directory holds ``{train,test}/dataset.json`` and ``{train,test}/all__{inputs,labels,puzzle_identifiers,
puzzle_indices,group_indices}.npy`` (ARC adds ``identifiers.json``, the name of every puzzle id). The reference
augments with unseeded ``np.random``, so only these files reproduce a reference training set exactly.

Layout: examples are rows of ``inputs`` / ``labels`` [N, seq_len]; puzzle p owns the examples
``puzzle_indices[p]:puzzle_indices[p + 1]`` and has the id ``puzzle_identifiers[p]``; group g owns the puzzles
``group_indices[g]:group_indices[g + 1]`` (Sudoku / Maze: one puzzle and its augmented copies, one example each; ARC:
one task, a puzzle per augmented copy holding all of that copy's pairs).

Tokens: the builders' encodings are rr's own (Sudoku 0 PAD, 1 blank, 2..10 the digits; Maze ``# SGo`` -> 1..5; ARC 0
PAD, 1 EOS, 2..11 the colours), so inputs are served as stored; labels equal to ``ignore_label_id`` (0 in every
builder, ARC's PAD cells) become -100, the loss's ignore index, as the reference's loader does.

Sampling: the reference draws, every epoch, each group once in a random order, one uniformly random puzzle of the
group and all of that puzzle's examples. Here an epoch is R such reference epochs, R the size of the largest group
(1001 with 1000 augmentations): group g is visited R times, its puzzles taken in a seeded random order and cycled, and
each visit serves all of the puzzle's examples. So every group is seen equally often and every puzzle about equally
often, as in the reference; where all groups have the same size (every Sudoku / Maze build) an epoch is exactly every
example once. The served items are shuffled by rr's seeded sampler, so one puzzle's examples do not share a batch as
they do in the reference. Evaluation serves every example of the test split in order, as the reference does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datamodules import arc_rules
from datamodules.arc import PuzzleIdMap
from datamodules.arc_eval import ARCEvaluator
from datamodules.base import PuzzleDataModule
from datamodules.dataset import Batch, PuzzleDataset
from datamodules.evaluator import PuzzleEvaluator
from datamodules.kinds import ARCKind, MazeKind, PuzzleKind
from datamodules.maze import PathEvaluator

__all__ = ["BUILDER_TOKENS", "TOKENS", "ReferenceArrays", "ReferenceDataset", "parse_identifier"]

IGNORE_LABEL = -100
FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
METADATA_KEYS = ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id", "num_puzzle_identifiers",
                 "sets")
# The kinds the reference builders write, by `PuzzleKind.name`: (inclusive input token range, inclusive label token
# range) of their output. Another kind's tokens are checked against its whole vocabulary.
BUILDER_TOKENS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "sudoku": ((1, 10), (2, 10)),
    "maze": ((1, 4), (1, 5)),
    "arc": ((0, 11), (0, 11)),
}
TOKENS = "tokens"  # the `kind` of plain token data: no puzzle kind, exact accuracy only
_BUILDERS = "build_sudoku_dataset.py, build_maze_dataset.py or build_arc_dataset.py of the TRM / HRM code"
_TRM_SEPARATOR = "|||"
_HRM_NAME = re.compile(r"^(?P<base>.+)_t(?P<k>\d+)_(?P<colours>\d{10})$")
_SCAN_ROWS = 1 << 16  # rows checked at once when validating the token arrays


def parse_identifier(name: str) -> tuple[str, np.ndarray]:
    """(task name, augmentation row uint8 [11] = [k, colours...]) of a reference puzzle name.

    TRM names an augmented copy ``<task>|||t<k>|||<colours>``, HRM ``<task>_t<k>_<colours>`` (colours: the 10 digits
    colour c becomes), the identity copy plain ``<task>``.
    """
    if _TRM_SEPARATOR in name:
        parts = name.split(_TRM_SEPARATOR)
        if len(parts) != 3 or not parts[1].startswith("t"):
            raise ValueError(f"puzzle name {name!r} is not '<task>|||t<k>|||<10 colour digits>'")
        base, k, colours = parts[0], parts[1][1:], parts[2]
    else:
        match = _HRM_NAME.match(name)
        if match is None:
            return name, arc_rules.IDENTITY.copy()
        base, k, colours = match["base"], match["k"], match["colours"]
    digits = [int(c) for c in colours] if colours.isdigit() else []
    if not k.isdigit() or int(k) > 7 or sorted(digits) != list(range(10)):
        raise ValueError(f"puzzle name {name!r}: the transform must be t0..t7 and the colours a permutation of 0..9")
    return base, np.array([int(k), *digits], dtype=np.uint8)


@dataclass
class _Split:
    """One split of a reference directory: its metadata, the token array files and the index arrays."""

    directory: Path
    metadata: dict[str, Any]
    inputs: Path
    labels: Path
    rows: int
    puzzle_identifiers: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    @property
    def puzzle_of_example(self) -> np.ndarray:
        """The puzzle of every example, int64 [N]."""
        return np.repeat(np.arange(len(self.puzzle_identifiers)), np.diff(self.puzzle_indices))

    def end_of_groups(self, groups: int | None) -> int:
        """Number of leading examples that make up the first `groups` groups (None: all)."""
        count = len(self.group_indices) - 1 if groups is None else min(groups, len(self.group_indices) - 1)
        return int(self.puzzle_indices[self.group_indices[count]])


def _read_split(root: Path, split: str) -> _Split:
    """Read and check one split's metadata and index arrays; the token arrays are only opened memory-mapped."""
    directory = root / split
    meta_path = directory / "dataset.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{meta_path} is missing: {root} is not a reference data directory (it needs train/ and test/, each with "
            f"dataset.json and all__*.npy). Build one with {_BUILDERS}"
        )
    try:
        metadata = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}); rebuild the directory") from None
    missing = [key for key in METADATA_KEYS if not isinstance(metadata, dict) or key not in metadata]
    if missing:
        raise ValueError(f"{meta_path} lacks {missing}; it was not written by {_BUILDERS}")
    if metadata["sets"] != ["all"]:
        raise ValueError(
            f"{meta_path} lists the sets {metadata['sets']}; only the builders' single set 'all' is supported (merge "
            "the sets' arrays into all__*.npy)"
        )
    paths = {field: directory / f"all__{field}.npy" for field in FIELDS}
    absent = [str(path) for path in paths.values() if not path.is_file()]
    if absent:
        raise FileNotFoundError(f"missing array files: {', '.join(absent)}; rebuild the directory with {_BUILDERS}")
    arrays = {field: np.load(path, mmap_mode="r") for field, path in paths.items()}
    seq_len = int(metadata["seq_len"])
    for field in ("inputs", "labels"):
        array = arrays[field]
        if array.ndim != 2 or array.shape[1] != seq_len or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{paths[field]} has shape {array.shape} and dtype {array.dtype}; expected integers [N, {seq_len}] "
                f"(seq_len of {meta_path})"
            )
    if arrays["inputs"].shape != arrays["labels"].shape:
        raise ValueError(
            f"{paths['inputs']} has shape {arrays['inputs'].shape} but {paths['labels']} {arrays['labels'].shape}; "
            "every example needs one input and one label row"
        )
    rows = arrays["inputs"].shape[0]
    if rows == 0:
        raise ValueError(f"{paths['inputs']} holds no examples; every split needs some")
    index = {field: np.asarray(arrays[field]).astype(np.int64) for field in FIELDS[2:]}
    puzzles = len(index["puzzle_identifiers"])
    checks = [
        ("puzzle_indices", puzzles + 1, 0, rows, "the examples", False),
        ("group_indices", None, 0, puzzles, "the puzzles", True),
    ]
    for field, length, first, last, what, strict in checks:
        values = index[field]
        steps = np.diff(values)
        if (values.ndim != 1 or (length is not None and len(values) != length) or len(values) < 2
                or values[0] != first or values[-1] != last or (steps <= 0 if strict else steps < 0).any()):
            raise ValueError(
                f"{paths[field]} must be 1-d {'strictly ' if strict else ''}increasing offsets from {first} to {last} "
                f"into {what}{'' if length is None else f' ({length} of them)'}; the arrays do not belong together, "
                "rebuild the directory"
            )
    ids = index["puzzle_identifiers"]
    limit = int(metadata["num_puzzle_identifiers"])
    if puzzles and (ids.min() < 0 or ids.max() >= limit):
        raise ValueError(
            f"{paths['puzzle_identifiers']} holds ids {int(ids.min())}..{int(ids.max())}, outside the "
            f"num_puzzle_identifiers={limit} of {meta_path}"
        )
    return _Split(directory, metadata, paths["inputs"], paths["labels"], rows, ids, index["puzzle_indices"],
                  index["group_indices"])


def _check_tokens(path: Path, allowed: tuple[int, int], ignore: int | None, what: str) -> None:
    """Refuse a token array with a value outside `allowed` (inclusive; `ignore` is always allowed), in row chunks."""
    array = np.load(path, mmap_mode="r")
    lo, hi = allowed
    for start in range(0, len(array), _SCAN_ROWS):
        chunk = np.asarray(array[start : start + _SCAN_ROWS])
        if chunk.size == 0 or (chunk.min() >= lo and chunk.max() <= hi):
            continue
        bad = (chunk < lo) | (chunk > hi)
        if ignore is not None:
            bad &= chunk != ignore
        if bad.any():
            row, column = np.argwhere(bad)[0]
            raise ValueError(
                f"{path}: row {start + row} has token {int(chunk[row, column])} at position {column}, but {what} uses "
                f"tokens {lo}..{hi}; the directory holds other data than its dataset.json says (pass the right kind, "
                "or kind='tokens' for plain token data)"
            )


def _fitting_kinds(seq_len: int, vocab_size: int) -> dict[str, PuzzleKind]:
    """Every registered kind whose `from_shape` builds one with exactly this shape (a model may have spare tokens,
    data in a kind's encoding has its vocabulary), by name."""
    fits: dict[str, PuzzleKind] = {}
    for name, cls in PuzzleKind.registry.items():
        try:
            kind = cls.from_shape(seq_len, vocab_size)
        except ValueError:
            continue
        if (kind.seq_len, kind.vocab_size) == (seq_len, vocab_size):
            fits[name] = kind
    return fits


class ReferenceDataset(PuzzleDataset):
    """Examples (rows of the memory-mapped token arrays) served a batch at once, ignore labels mapped to -100.

    Batches carry ``example_ids`` (the index in this dataset; the ARC evaluator uses it). The arrays are opened in each
    process on first use, so DataLoader workers never copy them.

    Args:
        inputs: The inputs .npy file [N, L].
        labels: The labels .npy file [N, L].
        rows: Row of every item in the files, int64 [M].
        puzzle_ids: Puzzle id of every item, int64 [M].
        ignore_label: Label value that is not scored (None: none).
    """

    def __init__(self, inputs: Path, labels: Path, rows: np.ndarray, puzzle_ids: np.ndarray,
                 ignore_label: int | None) -> None:
        self.paths = (inputs, labels)
        self.rows, self.puzzle_ids, self.ignore_label = rows, puzzle_ids, ignore_label
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}

    def __len__(self) -> int:
        """Number of items."""
        return len(self.rows)

    def __getitems__(self, indices: list[int]) -> Batch:
        """The batch of `indices`: inputs and labels [B, L], puzzle_ids and example_ids [B]."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices out of range for a dataset of {len(self)} examples")
        if self._arrays is None:
            self._arrays = (np.load(self.paths[0], mmap_mode="r"), np.load(self.paths[1], mmap_mode="r"))
        rows = self.rows[idx]
        inputs = self._arrays[0][rows]
        labels = self._arrays[1][rows].astype(np.int64)
        if self.ignore_label is not None:
            labels[labels == self.ignore_label] = IGNORE_LABEL
        return self.batch(inputs, labels, self.puzzle_ids[idx], idx)


def _training_rows(split: _Split, seed: int) -> np.ndarray:
    """The example rows of one epoch: every group visited R times (R = largest group), its puzzles in a seeded
    random order, cycled; each visit gives all of its puzzle's examples."""
    sizes = np.diff(split.group_indices)
    groups, visits = len(sizes), int(sizes.max())
    group_of_puzzle = np.repeat(np.arange(groups), sizes)
    keys = np.random.default_rng(seed).random(len(group_of_puzzle))
    order = np.lexsort((keys, group_of_puzzle))  # puzzles grouped, in random order within each group
    group = np.repeat(np.arange(groups), visits)
    visit = np.tile(np.arange(visits), groups)
    puzzle = order[split.group_indices[group] + visit % sizes[group]]
    starts, counts = split.puzzle_indices[puzzle], np.diff(split.puzzle_indices)[puzzle]
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + offsets


class ReferenceArrays(PuzzleDataModule):
    """A data directory built by the TRM / HRM reference builders, as an rr data module.

    The puzzle kind is the registered kind (`PuzzleKind.registry`) whose `from_shape` fits dataset.json's seq_len and
    vocab_size exactly (where several fit, the one a reference builder writes: Sudoku, Maze or ARC), and decides the
    evaluator: mazes log valid_path, ARC votes over the copies (pass@k, a submission JSON) with the puzzle-id map read
    from identifiers.json, which is saved in checkpoints. Validation is the test split's first `val_groups`
    groups (a Sudoku / Maze puzzle, an ARC task with all its copies), test its first `test_groups`. See the module
    docstring for the training sampling.

    Args:
        path: The directory the builder wrote (with train/, test/ and, for ARC, identifiers.json).
        kind: The name of a registered puzzle kind ('sudoku', 'maze', 'arc', ...), 'tokens' (plain token data:
            exact accuracy only), or None to detect it from dataset.json.
        val_groups: Groups of the test split used for validation; None uses all.
        test_groups: Groups of the test split used for testing and prediction; None uses all.
        batch_size: Global training batch size (over all devices; docs/scaling.md).
        eval_batch_size: Batch size for validation, test and prediction; None uses batch_size.
        num_workers: DataLoader worker processes.
        seed: Seed of the puzzle order within groups and of the shuffling.
    """

    def __init__(
        self,
        path: str,
        kind: str | None = None,
        val_groups: int | None = 2048,
        test_groups: int | None = None,
        batch_size: int = 768,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers, seed)
        if kind is not None and kind != TOKENS and kind not in PuzzleKind.registry:
            raise ValueError(f"kind must be one of {sorted([*PuzzleKind.registry, TOKENS])} or None (read from "
                             f"dataset.json), got {kind!r}")
        for name, value in (("val_groups", val_groups), ("test_groups", test_groups)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None (all groups), got {value}")
        self.path = Path(path)
        self._kind = kind
        self.val_groups = val_groups
        self.test_groups = test_groups
        self._layout: dict[str, Any] | None = None
        self.save_hyperparameters()

    # --- layout ------------------------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        """Read and check both splits' metadata and indices once (cheap: the token arrays stay on disk)."""
        if self._layout is not None:
            return self._layout
        if not self.path.is_dir():
            raise FileNotFoundError(
                f"reference data directory {self.path} does not exist; point path at the output_dir of {_BUILDERS}"
            )
        splits = {split: _read_split(self.path, split) for split in ("train", "test")}
        meta = splits["train"].metadata
        differ = [key for key in METADATA_KEYS[:-1] if splits["test"].metadata[key] != meta[key]]
        if differ:
            raise ValueError(
                f"train/dataset.json and test/dataset.json of {self.path} disagree on {differ}; the splits come from "
                "different builds"
            )
        kind = self._kind_of(int(meta["seq_len"]), int(meta["vocab_size"]))
        self._layout = {"splits": splits, "meta": meta, "map": None}
        if isinstance(kind, ARCKind):  # its puzzle ids are augmented copies of tasks, named in identifiers.json
            self._layout["map"] = self._read_map(int(meta["num_puzzle_identifiers"]))
            kind = ARCKind(self._layout["map"])
        self._layout["kind"] = kind
        return self._layout

    def _kind_of(self, seq_len: int, vocab_size: int) -> PuzzleKind | None:
        """The constructor's kind, or the detected one, built for this shape; None for plain tokens."""
        shape = f"dataset.json of {self.path} gives vocab_size={vocab_size} and seq_len={seq_len}"
        if self._kind == TOKENS:
            return None
        fits = _fitting_kinds(seq_len, vocab_size)
        built = [name for name in fits if name in BUILDER_TOKENS]
        if self._kind is not None:
            if self._kind not in fits:
                named = " or ".join([*built, *(name for name in fits if name not in built)]) or "no known kind"
                raise ValueError(f"kind={self._kind!r} but {shape}, which is {named}; leave kind unset to detect it")
            return fits[self._kind]
        names = built or list(fits)
        if not names:
            raise ValueError(
                f"{shape}, which no known builder writes (Sudoku 11 / 81, Maze 6 / N*N, ARC 12 / 900) and no "
                f"registered kind fits; pass kind='{TOKENS}' to train on the tokens as they are (exact accuracy only)"
            )
        if len(names) > 1:
            raise ValueError(f"{shape}, which fits the kinds {names}; pass kind= one of them")
        return fits[names[0]]

    def _read_map(self, count: int) -> PuzzleIdMap:
        """The puzzle-id map of identifiers.json: task 'reference:<name>' and augmentation of every id."""
        path = self.path / "identifiers.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: ARC data needs the puzzle names build_arc_dataset.py writes")
        names = json.loads(path.read_text())
        if not isinstance(names, list) or len(names) != count or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"{path} must list {count} names (num_puzzle_identifiers of dataset.json), got "
                f"{len(names) if isinstance(names, list) else type(names).__name__}; it belongs to another build"
            )
        tasks: dict[str, int] = {}
        task_of_id = np.full(count, -1, dtype=np.int32)
        augmentations = np.tile(arc_rules.IDENTITY, (count, 1))
        for puzzle_id, name in enumerate(names):
            if name == "<blank>":
                continue
            try:
                base, augmentations[puzzle_id] = parse_identifier(name)
            except ValueError as err:
                raise ValueError(f"{path}, id {puzzle_id}: {err}") from None
            task_of_id[puzzle_id] = tasks.setdefault(f"reference:{base}", len(tasks))
        return PuzzleIdMap(list(tasks), task_of_id, augmentations)

    # --- metadata ----------------------------------------------------------------------------------------------

    @property
    def puzzle_kind(self) -> PuzzleKind | None:
        """The detected (or given) kind, ARC with the reference's puzzle-id map; None for plain tokens."""
        return self._read()["kind"]

    @property
    def vocab_size(self) -> int:
        """vocab_size of dataset.json."""
        return int(self._read()["meta"]["vocab_size"])

    @property
    def seq_len(self) -> int:
        """seq_len of dataset.json."""
        return int(self._read()["meta"]["seq_len"])

    @property
    def num_puzzle_ids(self) -> int:
        """num_puzzle_identifiers of dataset.json (the blank id 0 included)."""
        return int(self._read()["meta"]["num_puzzle_identifiers"])

    @property
    def puzzle_map(self) -> PuzzleIdMap | None:
        """ARC: the puzzle id <-> (task, augmentation) map of identifiers.json; None for other kinds."""
        return self._read()["map"]

    # --- datasets ----------------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Check the directory's metadata and index arrays (nothing to download)."""
        self._read()

    def _serve(self, split: _Split, rows: np.ndarray) -> ReferenceDataset:
        ids = split.puzzle_identifiers[split.puzzle_of_example[rows]]
        ignore = split.metadata["ignore_label_id"]
        return ReferenceDataset(split.inputs, split.labels, rows, ids, None if ignore is None else int(ignore))

    def build_datasets(self) -> dict[str, ReferenceDataset]:
        """Check every token against the kind's alphabet, then build the training epoch and the evaluation ranges."""
        layout = self._read()
        kind, splits = layout["kind"], layout["splits"]
        name = kind.name if kind is not None else TOKENS
        vocab = (0, self.vocab_size - 1)
        ranges = BUILDER_TOKENS.get(name, (vocab, vocab))
        ignore = layout["meta"]["ignore_label_id"]
        for split in splits.values():
            _check_tokens(split.inputs, ranges[0], None, f"{name} input")
            _check_tokens(split.labels, ranges[1], ignore, f"{name} label")
        train, test = splits["train"], splits["test"]
        return {
            "train": self._serve(train, _training_rows(train, self.seed)),
            "val": self._serve(test, np.arange(test.end_of_groups(self.val_groups))),
            "test": self._serve(test, np.arange(test.end_of_groups(self.test_groups))),
        }

    # --- evaluation --------------------------------------------------------------------------------------------

    def evaluator(self, stage: str) -> PuzzleEvaluator | None:
        """Mazes: the path checker; ARC: voting over the copies of the 'val' or 'test' examples; else None."""
        kind = self.puzzle_kind
        if isinstance(kind, ARCKind):
            return self._arc_evaluator(self.val_groups if stage == "val" else self.test_groups)
        return PathEvaluator() if isinstance(kind, MazeKind) else None

    def _arc_evaluator(self, groups: int | None) -> ARCEvaluator:
        """The evaluator over the first `groups` test groups; true outputs are the restored label grids."""
        split, puzzle_map = self._read()["splits"]["test"], self.puzzle_map
        assert puzzle_map is not None
        end = split.end_of_groups(groups)
        puzzle = split.puzzle_of_example[:end]
        ids = split.puzzle_identifiers[puzzle]
        pair = np.arange(end) - split.puzzle_indices[puzzle]
        tasks = puzzle_map.task_of_id[ids]
        if (tasks < 0).any():
            raise ValueError(f"{split.directory}: test examples carry the blank puzzle id; rebuild the directory")
        task_list, example_task = np.unique(tasks, return_inverse=True)
        pairs = np.zeros(len(task_list), dtype=np.int64)
        np.maximum.at(pairs, example_task, pair + 1)
        labels = np.load(split.labels, mmap_mode="r")
        outputs: list[list[np.ndarray | None]] = [[None] * int(n) for n in pairs]
        for row in np.argsort(~(puzzle_map.augmentations[ids] == arc_rules.IDENTITY).all(axis=1), kind="stable"):
            t, p = int(example_task[row]), int(pair[row])
            if outputs[t][p] is None:
                grid = arc_rules.crop(np.asarray(labels[row]))
                outputs[t][p] = arc_rules.restore(grid, puzzle_map.augmentations[ids[row]])
        names = [puzzle_map.task_names[t].removeprefix("reference:") for t in task_list]
        return ARCEvaluator(names, outputs, example_task, pair, puzzle_map.augmentations[ids])

    # --- checkpoints -------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The puzzle kind, the id count and, for ARC, the puzzle-id map (so `rr solve` and reloads know the ids)."""
        state = {**super().state_dict(), "num_puzzle_ids": self.num_puzzle_ids}
        if self.puzzle_map is not None:
            state["puzzle_map"] = self.puzzle_map.state_dict()
        return state

    def check_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse an ARC checkpoint whose puzzle ids mean other puzzles (another build, or rr's own ARC ids).

        A checkpoint without data-module state (e.g. `rr import` of a reference checkpoint) is taken as is: its ids
        are the reference's, right exactly when this is the directory it trained on.

        Raises:
            ValueError: naming the difference and what to use instead.
        """
        if self.puzzle_map is None:
            return
        state = checkpoint.get(type(self).__qualname__)
        if state is None:
            if "ARC" in checkpoint:
                raise ValueError(
                    "the checkpoint was trained with datamodules.ARC, whose puzzle ids differ from this reference "
                    "directory's; evaluate it with datamodules.ARC and its training settings"
                )
            return
        if "puzzle_map" not in state:
            trained = (state.get("puzzle_kind") or {}).get("class_path", "plain token")
            raise ValueError(f"the checkpoint was trained on reference {trained} data, not ARC")
        difference = self.puzzle_map.difference(PuzzleIdMap.from_state_dict(state["puzzle_map"]))
        if difference is not None:
            raise ValueError(
                f"the checkpoint's puzzle-id map differs from {self.path / 'identifiers.json'} ({difference}); it was "
                "trained on another build. Use the directory it was trained on"
            )
