"""Every data module's loaders serve whole batches built by the dataset (int32 inputs and puzzle ids, int64 labels)
that the collate function passes through untouched, with the same content and order as the seeded runs before."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

import datamodules
import datamodules.base
from datamodules import ARC, GeneratedPuzzles, ReferenceArrays
from datamodules.base import PuzzleDataModule
from datamodules.dataset import PuzzleDataset, collate_batch
from datamodules.kinds import FutoshikiKind

REFERENCE = Path(__file__).parent / "data" / "reference"


def _sudoku_dir(root: Path) -> Path:
    """train.csv and test.csv.gz, both the real 1000-row Sudoku-Extreme sample."""
    sample = require_shared("data/sudoku-extreme/train_random1k.csv.gz")
    root.mkdir(exist_ok=True)
    with gzip.open(sample, "rt") as src, open(root / "train.csv", "w") as dst:
        dst.write(src.read())
    shutil.copy(sample, root / "test.csv.gz")
    return root


MODULES: dict[str, Callable[[Path], PuzzleDataModule]] = {
    "sudoku": lambda tmp: datamodules.Sudoku(data_dir=str(_sudoku_dir(tmp / "sudoku")), subsample=50,
                                             augmentations=4, val_size=20, test_size=40, batch_size=16, hints=True),
    "generated-sudoku": lambda tmp: datamodules.GeneratedSudoku(size=4, train_size=32, val_size=8, test_size=8,
                                                                augmentations=2, batch_size=8, cache_dir=None),
    "maze": lambda tmp: datamodules.Maze(data_dir=str(require_shared("data/maze-30x30-hard-1k")), val_size=8,
                                         test_size=12, batch_size=16, eval_batch_size=5),
    "generated-maze": lambda tmp: datamodules.GeneratedMaze(side=6, min_path=6, train_size=16, val_size=8,
                                                            test_size=8, batch_size=8, cache_dir=None),
    "arc": lambda tmp: ARC(data_dir=str(require_shared("data")), max_tasks=3, augmentations=4, val_tasks=2,
                           batch_size=4, cache_dir=None),
    "futoshiki": lambda tmp: GeneratedPuzzles(FutoshikiKind(4), train_size=40, val_size=6, test_size=10,
                                              batch_size=8, cache_dir=None),
    "reference-sudoku": lambda tmp: ReferenceArrays(str(REFERENCE / "sudoku-extreme-20-aug-2"), batch_size=8),
    "reference-maze": lambda tmp: ReferenceArrays(str(REFERENCE / "maze-30x30-hard-3-aug"), batch_size=8),
    "reference-arc": lambda tmp: ReferenceArrays(str(REFERENCE / "arc-3-tasks-aug-2"), batch_size=8),
}

# sha1 (first 16 hex digits) of the first two training batches' inputs, labels and puzzle ids as int64 bytes, taken
# from the per-example collation these loaders replaced: seeded runs keep their data, order and augmentation draws.
FIRST_BATCHES = {"sudoku": "dde4f6898e3de58a", "futoshiki": "741ad759d4ee0eac", "arc": "8728539592e98916"}


def _module(name: str, tmp_path: Path) -> PuzzleDataModule:
    module = MODULES[name](tmp_path)
    module.prepare_data()
    module.setup("fit")
    return module


class CountingCollate:
    """A stand-in for `collate_batch` that records what each call receives."""

    def __init__(self) -> None:
        self.received: list[object] = []

    def __call__(self, batch: object) -> object:
        self.received.append(batch)
        return collate_batch(batch)


@pytest.mark.parametrize("name", list(MODULES))
def test_loaders_serve_int32_tokens_and_int64_labels_collated_whole(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = _module(name, tmp_path)
    collate = CountingCollate()
    monkeypatch.setattr(datamodules.base, "collate_batch", collate)

    def per_example(self: PuzzleDataset, index: int) -> None:
        raise AssertionError(f"the loader fetched example {index} alone; it must fetch whole batches")

    for split, loader in (("train", module.train_dataloader()), ("val", module.val_dataloader())):
        dataset = module.datasets[split]
        monkeypatch.setattr(type(dataset), "__getitem__", per_example)
        assert loader.collate_fn is collate, f"{split}: the loader does not pass batches through"
        served = list(loader)
        assert len(collate.received) == len(served) and all(a is b for a, b in zip(collate.received, served)), (
            f"{split}: each batch must reach the collate function once, as the one dict the loader yields"
        )
        collate.received.clear()
        for batch in served:
            size, length = batch["inputs"].shape
            assert length == module.seq_len and batch["labels"].shape == (size, length)
            assert batch["puzzle_ids"].shape == (size,)
            assert (batch["inputs"].dtype, batch["puzzle_ids"].dtype, batch["labels"].dtype) == (
                torch.int32, torch.int32, torch.int64), f"{split}: {({k: v.dtype for k, v in batch.items()})}"
            assert batch.get("example_ids", torch.zeros(0, dtype=torch.int64)).dtype == torch.int64
        assert sum(len(b["inputs"]) for b in served) == (len(loader) * loader.batch_size if split == "train"
                                                          else len(dataset))


@pytest.mark.parametrize("name", ["sudoku", "maze", "arc", "reference-arc"])
def test_one_example_is_its_row_of_the_batch(name: str, tmp_path: Path) -> None:
    dataset = _module(name, tmp_path).datasets["train"]
    indices = [len(dataset) - 1, 0, 3]
    batch = dataset.__getitems__(indices)
    for row, index in enumerate(indices):
        single = dataset[index]
        assert single.keys() == batch.keys()
        for key, value in single.items():
            assert value.dtype == batch[key].dtype and torch.equal(value, batch[key][row]), (index, key)


@pytest.mark.parametrize("name", list(FIRST_BATCHES))
def test_training_batches_are_the_ones_seeded_runs_had(name: str, tmp_path: Path) -> None:
    loader = iter(_module(name, tmp_path).train_dataloader())
    digest = hashlib.sha1()
    for batch in (next(loader), next(loader)):
        for key in ("inputs", "labels", "puzzle_ids"):
            digest.update(batch[key].numpy().astype(np.int64).tobytes())
    assert digest.hexdigest()[:16] == FIRST_BATCHES[name]


def test_worker_processes_serve_the_same_batches(tmp_path: Path) -> None:
    module = _module("generated-sudoku", tmp_path)
    alone = list(module._loader(module.datasets["train"], 5))
    module.num_workers = 2
    assert len(alone) == 13 and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for a, b in
                                    zip(alone, module._loader(module.datasets["train"], 5), strict=True) for k in a)


def test_collate_passes_a_batch_through_and_names_per_example_items() -> None:
    batch = PuzzleDataset.batch(np.ones((2, 3), dtype=np.uint8), np.ones((2, 3), dtype=np.int64))
    assert collate_batch(batch) is batch
    with pytest.raises(TypeError, match="PuzzleDataset subclass"):
        collate_batch([{"inputs": torch.zeros(3)}])
    assert PuzzleDataModule._collate([1, 2, 3]) is None  # a plain dataset keeps PyTorch's per-example collate
