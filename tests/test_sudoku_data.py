"""Tests of the Sudoku token encoding, the augmenting dataset and the two Sudoku datamodules."""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

import datamodules
from datamodules import sudoku as sd
from datamodules import sudoku_rules as rules
from datamodules.base import PuzzleDataModule

SAMPLE_PATH = "data/sudoku-extreme/train_random1k.csv.gz"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with train.csv (plain) and test.csv.gz, both made from the real 1000-row sample."""
    sample = require_shared(SAMPLE_PATH)
    root = tmp_path_factory.mktemp("sudoku-extreme")
    with gzip.open(sample, "rt") as src, open(root / "train.csv", "w") as dst:
        dst.write(src.read())
    shutil.copy(sample, root / "test.csv.gz")
    return root


def _sample_rows() -> list[tuple[str, str]]:
    """(question, answer) strings of the real sample, in file order."""
    with gzip.open(require_shared(SAMPLE_PATH), "rt") as f:
        lines = f.read().splitlines()[1:]
    return [tuple(line.split(",")[1:3]) for line in lines]


def test_encode_decode_roundtrip() -> None:
    grid = np.array([0, 1, 5, 9])
    np.testing.assert_array_equal(sd.encode(grid), [1, 2, 6, 10])
    np.testing.assert_array_equal(sd.decode(sd.encode(grid)), grid)
    tokens = torch.tensor([0, 1, 2, 10])
    assert sd.decode(tokens).tolist() == [0, 0, 1, 9]
    assert torch.equal(sd.encode(sd.decode(tokens[1:])), tokens[1:])


def test_dataset_augmentation_is_deterministic() -> None:
    puzzles, solutions = rules.generate(6, 5, seed=0, workers=1)
    ds = sd.SudokuDataset(puzzles, solutions, augmentations=4, seed=3)
    assert len(ds) == 20
    for i in range(5):
        item = ds[i]
        assert torch.equal(item["inputs"], torch.from_numpy(puzzles[i].astype(np.int64) + 1))
        assert torch.equal(item["labels"], torch.from_numpy(solutions[i].astype(np.int64) + 1))
    changed = 0
    for i in range(5, 20):
        a, b = ds[i], ds[i]
        assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["labels"], b["labels"])
        puzzle, solution = sd.decode(a["inputs"]).numpy(), sd.decode(a["labels"]).numpy()
        assert rules.is_valid_solution(solution) and rules.is_consistent(puzzle, solution)
        assert (puzzle > 0).sum() == (puzzles[i % 5] > 0).sum()
        changed += not np.array_equal(solution, solutions[i % 5])
    assert changed >= 13
    other_seed = sd.SudokuDataset(puzzles, solutions, augmentations=4, seed=4)
    assert not all(torch.equal(ds[i]["labels"], other_seed[i]["labels"]) for i in range(5, 20))
    with pytest.raises(IndexError):
        ds[20]


def test_batched_items_match_single_items() -> None:
    puzzles, solutions = rules.generate(9, 4, givens=30, seed=0, workers=1)
    ds = sd.SudokuDataset(puzzles, solutions, augmentations=10, seed=1)
    indices = [39, 0, 5, 17, 2, 38]
    batch = ds.__getitems__(indices)
    for row, index in enumerate(indices):
        single = ds[index]
        assert all(torch.equal(batch[k][row], single[k]) for k in ("inputs", "labels", "puzzle_ids"))


def test_properties_before_setup(tmp_path: Path) -> None:
    dm = datamodules.Sudoku(data_dir=str(tmp_path / "nowhere"))
    assert (dm.vocab_size, dm.seq_len, dm.num_puzzle_ids, dm.size) == (11, 81, 1, 9)
    gen = datamodules.GeneratedSudoku(size=4, cache_dir=None)
    assert (gen.vocab_size, gen.seq_len, gen.num_puzzle_ids, gen.size) == (6, 16, 1, 4)


def test_missing_data_dir_names_paths(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    dm = datamodules.Sudoku(data_dir=str(missing))
    with pytest.raises(FileNotFoundError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert str(missing / "train.csv") in message and str(missing / "test.csv") in message
    assert "sapientinc/sudoku-extreme" in message and "download=true" in message
    with pytest.raises(FileNotFoundError):
        dm.setup("fit")


def test_download_without_huggingface_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    dm = datamodules.Sudoku(data_dir=str(tmp_path), download=True)
    with pytest.raises(ImportError, match="pip install huggingface_hub"):
        dm.prepare_data()


def test_sudoku_datamodule(data_dir: Path) -> None:
    dm = datamodules.Sudoku(
        data_dir=str(data_dir), subsample=50, augmentations=8, val_size=20, test_size=100, batch_size=16
    )
    dm.prepare_data()
    dm.setup("fit")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"]), len(dm.datasets["test"])) == (400, 20, 100)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"inputs", "labels", "puzzle_ids"}
    assert batch["inputs"].shape == batch["labels"].shape == (16, 81)
    assert batch["puzzle_ids"].shape == (16,) and (batch["puzzle_ids"] == 0).all()
    assert (batch["inputs"].dtype, batch["labels"].dtype, batch["puzzle_ids"].dtype) == (torch.int32, torch.int64,
                                                                                         torch.int32)
    assert batch["inputs"].min() >= 1 and batch["inputs"].max() < dm.vocab_size
    assert batch["labels"].min() >= 2 and batch["labels"].max() < dm.vocab_size
    assert rules.valid_solutions(sd.decode(batch["labels"]).numpy()).all()
    assert rules.is_consistent(sd.decode(batch["inputs"]).numpy(), sd.decode(batch["labels"]).numpy()).all()
    assert len(dm.train_dataloader()) == 400 // 16
    # evaluation splits are the leading test-file rows, never augmented, in order
    rows = _sample_rows()
    test_batch = next(iter(dm.test_dataloader()))
    expected = np.stack([rules.parse_puzzle(q) for q, _ in rows[: len(test_batch["inputs"])]])
    np.testing.assert_array_equal(sd.decode(test_batch["inputs"]).numpy(), expected)
    val_labels = torch.cat([b["labels"] for b in dm.val_dataloader()])
    np.testing.assert_array_equal(sd.decode(val_labels).numpy(), [rules.parse_puzzle(a) for _, a in rows[:20]])
    assert len(torch.cat([b["inputs"] for b in dm.predict_dataloader()])) == 100


def test_sudoku_subsample_is_seeded(data_dir: Path) -> None:
    def train_puzzles(seed: int) -> np.ndarray:
        dm = datamodules.Sudoku(data_dir=str(data_dir), subsample=30, augmentations=1, val_size=4, test_size=4,
                                batch_size=4, seed=seed)
        dm.setup("fit")
        return dm.datasets["train"].puzzles

    a, b, c = train_puzzles(0), train_puzzles(0), train_puzzles(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    everything = {rules.parse_puzzle(q).astype(np.uint8).tobytes() for q, _ in _sample_rows()}
    assert all(p.tobytes() in everything for p in a)


def test_train_shuffle_is_seeded(data_dir: Path) -> None:
    def first_batch(seed: int) -> torch.Tensor:
        dm = datamodules.Sudoku(data_dir=str(data_dir), subsample=20, augmentations=5, val_size=4, test_size=4,
                                batch_size=8, seed=seed)
        return next(iter(dm.train_dataloader()))["inputs"]

    assert torch.equal(first_batch(0), first_batch(0))
    assert not torch.equal(first_batch(0), first_batch(1))


def test_bad_csv_row_names_file_and_line(tmp_path: Path) -> None:
    rows = _sample_rows()[:5]
    lines = ["source,question,answer,rating"] + [f"unknown,{q},{a},0" for q, a in rows]
    q, a = rows[2]
    lines[3] = f"unknown,{q},{a[:-1]}{'1' if a[-1] != '1' else '2'},0"  # answer breaks the rules
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.csv").write_text("\n".join(lines[:3]) + "\n")
    dm = datamodules.Sudoku(data_dir=str(tmp_path), subsample=None, val_size=1, test_size=1, batch_size=1)
    with pytest.raises(ValueError, match=r"train\.csv:4: answer"):
        dm.setup("fit")
    lines[3] = f"unknown,{q[:-1]},{a},0"
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train\.csv:4: question has 80 characters, expected 81"):
        datamodules.Sudoku(data_dir=str(tmp_path), subsample=None, val_size=1, test_size=1).setup("fit")


def test_generated_sudoku_cache_roundtrip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kwargs = {"size": 4, "train_size": 60, "val_size": 10, "test_size": 10, "batch_size": 8,
              "cache_dir": str(tmp_path), "seed": 5}
    dm = datamodules.GeneratedSudoku(**kwargs)
    assert dm.cache_path is not None and not dm.cache_path.exists()
    dm.prepare_data()
    dm.setup("fit")
    assert dm.cache_path.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [dm.cache_path.name], "no temporary files may be left behind"
    splits = {k: dm.datasets[k].puzzles for k in ("train", "val", "test")}
    assert {k: len(v) for k, v in splits.items()} == {"train": 60, "val": 10, "test": 10}
    keys = [{p.tobytes() for p in v} for v in splits.values()]
    assert sum(len(k) for k in keys) == 80 and len(set.union(*keys)) == 80, "splits must be disjoint and distinct"
    assert rules.valid_solutions(dm.datasets["train"].solutions).all()

    def no_generation(*args: object, **kw: object) -> None:
        raise AssertionError("should have loaded the cache")

    monkeypatch.setattr(rules, "generate", no_generation)
    again = datamodules.GeneratedSudoku(**kwargs)
    again.prepare_data()
    again.setup("test")
    for k, v in splits.items():
        np.testing.assert_array_equal(again.datasets[k].puzzles, v)
    other = datamodules.GeneratedSudoku(**{**kwargs, "seed": 6})
    assert other.cache_path != dm.cache_path
    batch = next(iter(again.train_dataloader()))
    assert batch["inputs"].shape == (8, 16) and batch["inputs"].max() < again.vocab_size


def test_generated_sudoku_without_cache_and_givens() -> None:
    dm = datamodules.GeneratedSudoku(size=6, givens=20, train_size=16, val_size=4, test_size=4, augmentations=3,
                                     batch_size=8, cache_dir=None)
    dm.setup("fit")
    train = dm.datasets["train"]
    assert len(train) == 48
    assert ((train.puzzles > 0).sum(axis=1) == 20).all()
    for i in range(len(train)):
        puzzle, solution = train.example(i)
        assert rules.is_valid_solution(solution) and rules.is_consistent(puzzle, solution)
    with pytest.raises(ValueError, match="givens must be between 1 and 36"):
        datamodules.GeneratedSudoku(size=6, givens=40)


def _hinted_dataset(augmentations: int = 3, seed: int = 2) -> tuple[sd.SudokuDataset, sd.SudokuDataset]:
    """The same 6x6 puzzles with and without hints."""
    puzzles, solutions = rules.generate(6, 8, seed=0, workers=1)
    return (sd.SudokuDataset(puzzles, solutions, augmentations, seed, hints=True),
            sd.SudokuDataset(puzzles, solutions, augmentations, seed))


def _rows(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The examples of a batch dict, one dict per row."""
    return [dict(zip(batch, row)) for row in zip(*batch.values())]


def test_hinted_twins_fill_some_blanks_from_the_solution() -> None:
    hinted, plain = _hinted_dataset()
    m = len(plain)
    assert len(hinted) == 2 * m == 48
    originals, first_half = hinted.__getitems__(list(range(m))), plain.__getitems__(list(range(m)))
    assert all(torch.equal(originals[k], first_half[k]) for k in ("inputs", "labels")), "the first half is plain"
    twins = hinted.__getitems__(list(range(m, 2 * m)))
    for i, (original, twin) in enumerate(zip(_rows(originals), _rows(twins))):
        assert torch.equal(twin["labels"], original["labels"]), f"twin {i}: labels are unchanged"
        puzzle, solution = sd.decode(original["inputs"]).numpy(), sd.decode(original["labels"]).numpy()
        hinted_puzzle = sd.decode(twin["inputs"]).numpy()
        given = hinted_puzzle > 0
        np.testing.assert_array_equal(hinted_puzzle[given], solution[given], err_msg=f"twin {i}: givens = solution")
        np.testing.assert_array_equal(hinted_puzzle[puzzle > 0], puzzle[puzzle > 0], err_msg=f"twin {i}: kept givens")
        blanks, added = int((puzzle == 0).sum()), int(given.sum() - (puzzle > 0).sum())
        assert 1 <= added <= blanks - 1, f"twin {i}: {added} hints for {blanks} blanks"


def test_hints_are_deterministic_per_index_and_vary_across_indices() -> None:
    hinted, _ = _hinted_dataset()
    m = len(hinted) // 2
    indices = list(range(m, 2 * m))
    first, again = hinted.__getitems__(indices)["inputs"], hinted.__getitems__(indices[::-1])["inputs"].flip(0)
    assert torch.equal(first, again), "same index, same twin"
    assert all(torch.equal(hinted[j]["inputs"], first[j - m]) for j in (m, m + 7, 2 * m - 1))
    added = [int((x > 1).sum() - (hinted[j - m]["inputs"] > 1).sum()) for j, x in zip(indices, first)]
    assert len(set(added)) > 3, f"the number of hints varies across indices: {added}"
    other_seed = sd.SudokuDataset(hinted.puzzles, hinted.solutions, hinted.augmentations, seed=3, hints=True)
    assert not all(torch.equal(hinted[j]["inputs"], other_seed[j]["inputs"]) for j in range(m, m + 8)), (
        "twins of the untransformed copies depend on the seed")
    with pytest.raises(IndexError):
        hinted[2 * m]


def test_add_hints_leaves_puzzles_with_fewer_than_two_blanks_alone() -> None:
    solutions = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    puzzles = np.array([[1, 2, 3, 4], [0, 2, 3, 4], [0, 0, 3, 0]])
    draws = np.random.default_rng(0).random((3, 5))
    out = sd.add_hints(puzzles, solutions, draws)
    np.testing.assert_array_equal(out[:2], puzzles[:2])
    assert (out[2] > 0).sum() in (2, 3) and (out[2][out[2] > 0] == solutions[2][out[2] > 0]).all()
    draws[2, 0] = 0.999  # the largest k is B - 1: never the whole solution
    assert (sd.add_hints(puzzles, solutions, draws)[2] > 0).sum() == 3
    with pytest.raises(ValueError, match=r"\[b, L \+ 1\]"):
        sd.add_hints(puzzles, solutions, draws[:, :4])


def test_hints_double_only_the_training_set() -> None:
    kwargs = {"size": 4, "train_size": 20, "val_size": 6, "test_size": 5, "augmentations": 2, "batch_size": 8,
              "cache_dir": None}
    plain = datamodules.GeneratedSudoku(**kwargs)
    assert plain.hints is False
    hinted = datamodules.GeneratedSudoku(**kwargs, hints=True)
    assert hinted.hparams["hints"] is True
    for dm in (plain, hinted):
        dm.setup("fit")
    sizes = {dm.hints: {k: len(v) for k, v in dm.datasets.items()} for dm in (plain, hinted)}
    assert sizes == {False: {"train": 40, "val": 6, "test": 5}, True: {"train": 80, "val": 6, "test": 5}}
    for split in ("val", "test"):
        assert not hinted.datasets[split].hints
        assert torch.equal(torch.cat([b["inputs"] for b in getattr(hinted, f"{split}_dataloader")()]),
                           torch.cat([b["inputs"] for b in getattr(plain, f"{split}_dataloader")()]))
    assert len(hinted.train_dataloader()) == 80 // 8
    batch = next(iter(hinted.train_dataloader()))
    assert rules.is_consistent(sd.decode(batch["inputs"]).numpy(), sd.decode(batch["labels"]).numpy()).all()
    assert datamodules.Sudoku(hints=True).hints and not datamodules.Sudoku().hints


def test_distinct_solutions_share_no_solution_grid_across_the_splits(tmp_path: Path) -> None:
    # 80 of the 288 4x4 grids: by default some puzzles share a solution (also across train and held-out splits).
    kwargs = {"size": 4, "train_size": 60, "val_size": 10, "test_size": 10, "batch_size": 4, "seed": 3}
    default = datamodules.GeneratedSudoku(**kwargs, cache_dir=None)
    default.setup("fit")
    shared = np.concatenate([default.datasets[k].solutions for k in ("train", "val", "test")])
    assert len(np.unique(shared, axis=0)) < 80, "the default set should repeat solutions, or this test proves nothing"
    dm = datamodules.GeneratedSudoku(**kwargs, cache_dir=None, distinct_solutions=True)
    assert dm.hparams["distinct_solutions"] is True
    dm.setup("fit")
    labels = np.concatenate([dm.datasets[k].solutions for k in ("train", "val", "test")])
    assert len(labels) == 80 and len(np.unique(labels, axis=0)) == 80
    assert rules.valid_solutions(labels).all()
    inputs = np.concatenate([dm.datasets[k].puzzles for k in ("train", "val", "test")])
    assert rules.is_consistent(inputs, labels).all()
    # The default keeps its cache key and file name; the option gets its own.
    plain = datamodules.GeneratedSudoku(**kwargs, cache_dir=str(tmp_path))
    distinct = datamodules.GeneratedSudoku(**kwargs, cache_dir=str(tmp_path), distinct_solutions=True)
    assert "distinct_solutions" not in plain.generated.key and distinct.generated.key["distinct_solutions"] is True
    assert plain.cache_path is not None and distinct.cache_path is not None
    assert distinct.cache_path.name.startswith(plain.cache_path.name.rsplit("_", 1)[0] + "_ds_")
    assert plain.cache_path != distinct.cache_path
    with pytest.raises(ValueError, match="by must be"):
        datamodules.generated.generate_distinct(lambda n, e: (np.zeros((n, 1)), np.zeros((n, 1))), 1, 0, by="puzzles")


def test_a_data_module_missing_part_of_the_contract_cannot_be_built() -> None:
    class NoKind(PuzzleDataModule):  # the task's shape but no puzzle_kind
        vocab_size = seq_len = num_puzzle_ids = 1

    with pytest.raises(TypeError, match="puzzle_kind"):
        NoKind(batch_size=4, eval_batch_size=None, num_workers=0, seed=0)
    module = datamodules.GeneratedSudoku(size=4, train_size=4, val_size=1, test_size=1, cache_dir=None)
    assert module.state_dict() == {"puzzle_kind": module.puzzle_kind.describe()}
    assert module.evaluator("val") is None
