"""Generated puzzle sets: made once from a seed, deduplicated, cached atomically as .npz keyed by their settings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from recursive_reasoning.core.files import atomic_write

Arrays = tuple[np.ndarray, np.ndarray]


class GeneratedArrays:
    """Generated (inputs, labels) pairs: made once, deduplicated, cached atomically as .npz keyed by their settings.

    Args:
        make: Generates `count` (inputs, labels) pairs from the seed `entropy`.
        total: How many distinct pairs to make.
        key: Every setting that changes the generated data (stored in the cache and checked on load).
        stem: Readable start of the cache file name, e.g. 'sudoku6_gmin_n20000-1000-1000_s0'.
        cache_dir: Directory for the .npz; None disables caching.
        seed: Seed of the generator.
        distinct: What must be distinct across all pairs: the 'inputs' (default) or the 'labels'.
    """

    def __init__(
        self,
        make: Callable[[int, tuple[int, ...]], Arrays],
        total: int,
        key: dict[str, Any],
        stem: str,
        cache_dir: str | None,
        seed: int,
        distinct: Literal["inputs", "labels"] = "inputs",
    ) -> None:
        self.make, self.total, self.key, self.seed, self.distinct = make, total, key, seed, distinct
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        self.path = None if cache_dir is None else Path(cache_dir) / f"{stem}_{digest}.npz"
        self._arrays: Arrays | None = None

    def _load_cache(self) -> Arrays | None:
        if self.path is None or not self.path.is_file():
            return None
        with np.load(self.path) as data:
            if json.loads(str(data["key"])) != self.key:
                return None
            return data["inputs"], data["labels"]

    def _save(self, arrays: Arrays) -> None:
        """Cache the arrays with their key (atomically)."""
        assert self.path is not None
        atomic_write(self.path, lambda handle: np.savez(handle, inputs=arrays[0], labels=arrays[1],
                                                      key=json.dumps(self.key)))

    def prepare(self) -> None:
        """Generate and cache the data unless the cache already holds it."""
        if self.path is not None and self._load_cache() is None:
            self._arrays = generate_distinct(self.make, self.total, self.seed, self.distinct)
            self._save(self._arrays)

    def load(self) -> Arrays:
        """The data: from memory, else the cache, else generated now (and cached)."""
        if self._arrays is None:
            self._arrays = self._load_cache()
        if self._arrays is None:
            self._arrays = generate_distinct(self.make, self.total, self.seed, self.distinct)
            if self.path is not None:
                self._save(self._arrays)
        return self._arrays


def split_in_order(arrays: Arrays, train_size: int, val_size: int) -> dict[str, Arrays]:
    """The first train_size pairs train, the next val_size validate, the rest test."""
    inputs, labels = arrays
    a, b = train_size, train_size + val_size
    return {"train": (inputs[:a], labels[:a]), "val": (inputs[a:b], labels[a:b]), "test": (inputs[b:], labels[b:])}


def generate_distinct(
    make: Callable[[int, tuple[int, ...]], Arrays], total: int, seed: int, by: Literal["inputs", "labels"] = "inputs"
) -> Arrays:
    """Call `make(count, entropy)` until `total` pairs with distinct `by` rows exist (up to 20 rounds); first
    occurrences kept. `by="labels"` makes the answers distinct (e.g. no two puzzles share a solution grid)."""
    if by not in ("inputs", "labels"):
        raise ValueError(f"by must be 'inputs' or 'labels', got {by!r}")
    inputs: np.ndarray | None = None
    labels: np.ndarray | None = None
    for attempt in range(20):
        have = 0 if inputs is None else len(inputs)
        need = total - have
        if need <= 0:
            break
        entropy = (seed,) if attempt == 0 else (seed, attempt)
        q, a = make(need if attempt == 0 else need + need // 2 + 32, entropy)
        inputs = q if inputs is None else np.concatenate([inputs, q])
        labels = a if labels is None else np.concatenate([labels, a])
        _, first = np.unique(inputs if by == "inputs" else labels, axis=0, return_index=True)
        keep = np.sort(first)
        inputs, labels = inputs[keep], labels[keep]
    if inputs is None or labels is None or len(inputs) < total:
        made = 0 if inputs is None else len(inputs)
        raise ValueError(
            f"could only make {made} examples with distinct {by}, fewer than the {total} requested; ask for fewer, "
            "or change the size / difficulty settings"
        )
    return inputs[:total], labels[:total]


class GeneratedSplits:
    """The data-module side of a generated set: a mixin for a `PuzzleDataModule` that holds its `GeneratedArrays`
    as `self.generated` and its sizes as `self.train_size` / `self.val_size` (listed before the data module's base)."""

    generated: GeneratedArrays
    train_size: int
    val_size: int

    @property
    def cache_path(self) -> Path | None:
        """The .npz file for these generation settings (None when caching is off)."""
        return self.generated.path

    def prepare_data(self) -> None:
        """Generate the puzzles and write the cache if it is not there yet."""
        self.generated.prepare()

    def load_splits(self) -> dict[str, Arrays]:
        """Load (or generate) the puzzles and split them into train / val / test in order."""
        return split_in_order(self.generated.load(), self.train_size, self.val_size)
