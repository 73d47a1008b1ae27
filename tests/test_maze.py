"""Tests of the maze rules (parsing, BFS, path checker, generator, dihedral transforms) and the maze datamodules."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

import datamodules
from datamodules import maze as mz
from datamodules import maze_rules as mr

TRAIN_PATH = "data/maze-30x30-hard-1k/train.csv.gz"
TEST_PATH = "data/maze-30x30-hard-1k/test.csv.gz"


@pytest.fixture(scope="module")
def train_rows() -> list[list[str]]:
    """All rows (source, question, answer, shortest_path_moves) of the real training file."""
    with gzip.open(require_shared(TRAIN_PATH), "rt", newline="") as f:
        return list(csv.reader(f))[1:]


@pytest.fixture(scope="module")
def train_arrays(train_rows: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(questions, answers) codes [1000, 900] of the real training file."""
    q = np.stack([mr.parse_maze(r[1]).reshape(-1) for r in train_rows])
    a = np.stack([mr.parse_maze(r[2]).reshape(-1) for r in train_rows])
    return q, a


def test_parse_format_roundtrip_on_real_rows(train_rows: list[list[str]]) -> None:
    for row in train_rows[:50]:
        for text in row[1:3]:
            grid = mr.parse_maze(text)
            assert grid.shape == (30, 30)
            assert mr.format_maze(grid) == text
            assert mr.format_maze(grid.reshape(-1)) == text
            assert np.array_equal(mr.parse_maze(mr.format_maze(grid, lines=True)), grid)
    assert mr.parse_maze("S G#").tolist() == [[mr.START, mr.OPEN], [mr.GOAL, mr.WALL]]


def test_real_answers_are_shortest_paths(train_arrays: tuple[np.ndarray, np.ndarray],
                                         train_rows: list[list[str]]) -> None:
    q, a = train_arrays
    assert mr.valid_paths(q, a).all()
    moves = mr.shortest_path_lengths(q)
    np.testing.assert_array_equal(moves, [int(r[3]) for r in train_rows])
    assert moves.min() >= 109
    assert mr.shortest_path_length(q[0].reshape(30, 30)) == moves[0]
    solved = mr.solve_batch(q[:20])
    assert mr.valid_paths(q[:20], solved).all()
    assert mr.valid_paths(q[:1], mr.solve(q[0])[None]).all()


def _corrupt(q: np.ndarray, a: np.ndarray) -> dict[str, np.ndarray]:
    """Wrong predictions made from one real (question, answer) pair [900]."""
    side = 30
    path = np.flatnonzero(a == mr.PATH)
    gap = a.copy()
    gap[path[len(path) // 2]] = mr.OPEN
    extra = a.copy()
    open_next = [i for i in np.flatnonzero(q == mr.OPEN) if a[i] == mr.OPEN]
    extra[open_next[0]] = mr.PATH  # a stray cell: one cell too many
    through_wall = a.copy()
    through_wall[np.flatnonzero(q == mr.WALL)[0]] = mr.PATH
    moved_s = a.copy()
    s = int(np.flatnonzero(a == mr.START)[0])
    moved_s[s] = mr.OPEN
    moved_s[path[0]] = mr.START
    # A detour: the same number of path cells, but one replaced by a cell off the path (no longer connected).
    detour = gap.copy()
    detour[open_next[0]] = mr.PATH
    blank = np.where(a == mr.PATH, mr.OPEN, a)
    pad = a.copy()
    pad[0] = mr.PAD
    assert side * side == len(a)
    return {"gap": gap, "extra": extra, "through_wall": through_wall, "moved_s": moved_s, "detour": detour,
            "blank": blank, "pad": pad}


def test_corrupted_predictions_are_rejected(train_arrays: tuple[np.ndarray, np.ndarray]) -> None:
    q, a = train_arrays
    bad = _corrupt(q[0], a[0])
    preds = np.stack(list(bad.values()))
    result = mr.valid_paths(np.repeat(q[:1], len(preds), axis=0), preds)
    assert not result.any(), dict(zip(bad, result))
    # A longer S -> G route (a detour around a 2x2 block) is rejected even though it is connected.
    maze = mr.parse_maze("S   \n    \n    \n   G\n")
    longer = mr.parse_maze("Sooo\n   o\n   o\n   G\n")
    assert mr.valid_paths(maze[None], longer[None]).all()
    snake = mr.parse_maze("S oo\noooo\no   \noooG\n")
    assert not mr.valid_paths(maze[None], snake[None]).any()
    ring = mr.parse_maze("Sooo\n  oo\n  oo\n   G\n")
    assert not mr.valid_paths(maze[None], ring[None]).any()


def test_unreachable_goal_gives_clear_errors() -> None:
    maze = mr.parse_maze("S#  \n##  \n    \n   G\n")
    assert mr.shortest_path_length(maze) == -1
    assert not mr.valid_paths(maze[None], maze[None]).any()
    with pytest.raises(ValueError, match="no path from S at row 0, column 0 to G at row 3, column 3"):
        mr.solve(maze)


def test_parse_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="invalid character 'x' at row 1, column 1"):
        mr.parse_maze("S Gx")
    with pytest.raises(ValueError, match="not a square"):
        mr.parse_maze("S G")
    with pytest.raises(ValueError, match="needs 9"):
        mr.parse_maze("S G#", side=3)
    with pytest.raises(ValueError, match="line 1 has 2 characters"):
        mr.parse_maze("S G\n  \n#  \n")
    with pytest.raises(ValueError, match="exactly one start S, found 2"):
        mr.parse_maze("SS G")
    with pytest.raises(ValueError, match="exactly one goal G, found 0"):
        mr.parse_maze("S   ")
    with pytest.raises(ValueError, match="not a maze cell"):
        mr.format_maze(np.zeros((2, 2), dtype=int))


@pytest.mark.parametrize("k", range(8))
def test_dihedral_inverse_and_validity(k: int, train_arrays: tuple[np.ndarray, np.ndarray]) -> None:
    q, a = train_arrays
    grids = a[:4].reshape(4, 30, 30)
    assert np.array_equal(mr.inverse_dihedral(mr.dihedral(grids, k), k), grids)
    assert np.array_equal(mr.inverse_dihedral(mr.dihedral(grids[0], k), k), grids[0])
    flat = q[:4][:, mr.dihedral_gather(30)[k]]
    np.testing.assert_array_equal(flat.reshape(4, 30, 30), mr.dihedral(q[:4].reshape(4, 30, 30), k))
    assert mr.valid_paths(mr.dihedral(q[:4].reshape(4, 30, 30), k), mr.dihedral(grids, k)).all()


def test_dihedral_transforms_are_distinct() -> None:
    grid = np.arange(9).reshape(3, 3)
    assert len({mr.dihedral(grid, k).tobytes() for k in range(8)}) == 8
    with pytest.raises(ValueError):
        mr.dihedral(grid, 8)


def test_generator_is_seeded_and_respects_min_path() -> None:
    q, a = mr.generate(8, 40, min_path=10, seed=3, workers=1)
    assert q.shape == a.shape == (40, 64) and q.dtype == np.uint8
    assert ((q == mr.START).sum(1) == 1).all() and ((q == mr.GOAL).sum(1) == 1).all()
    assert (mr.shortest_path_lengths(q) >= 10).all()
    assert mr.valid_paths(q, a).all()
    walls = (q == mr.WALL).sum(1)
    assert walls.min() >= int(0.3 * 64) and walls.max() <= int(0.5 * 64)
    q2, a2 = mr.generate(8, 40, min_path=10, seed=3, workers=1)
    assert np.array_equal(q, q2) and np.array_equal(a, a2)
    q3, _ = mr.generate(8, 40, min_path=10, seed=4, workers=1)
    assert not np.array_equal(q, q3)
    prefix, _ = mr.generate(8, 33, min_path=10, seed=3, workers=1)
    assert np.array_equal(prefix, q[:33])


def test_generator_errors() -> None:
    with pytest.raises(ValueError, match="min_path must be between 1 and 15"):
        mr.generate(4, 1, min_path=16)
    with pytest.raises(ValueError, match="found only 0 of 1"):
        mr.generate(4, 1, min_path=15, workers=1, max_layouts=64)


def test_dataset_augmentation_keeps_labels_valid(train_arrays: tuple[np.ndarray, np.ndarray]) -> None:
    q, a = train_arrays
    ds = mz.MazeDataset(q[:3], a[:3], augment=True)
    assert len(ds) == 24 and len(mz.MazeDataset(q[:3], a[:3])) == 3
    batch = ds.__getitems__(list(range(24)))
    inputs, labels = batch["inputs"], batch["labels"]
    assert inputs.dtype == torch.int32 and (batch["puzzle_ids"] == 0).all()
    assert torch.equal(inputs[:3], torch.from_numpy(q[:3].astype(np.int64)))
    assert mr.valid_paths(inputs.numpy(), labels.numpy()).all()
    assert len({x.numpy().tobytes() for x in inputs}) == 24
    for i in (5, 17):
        single = ds[i]
        assert torch.equal(single["inputs"], inputs[i]) and torch.equal(single["labels"], labels[i])
        k = i // 3
        expected = mr.dihedral(q[i % 3].reshape(30, 30), k).reshape(-1)
        assert np.array_equal(single["inputs"].numpy(), expected)
    with pytest.raises(IndexError):
        ds[24]


@pytest.fixture(scope="module")
def maze_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.csv.gz (the real file) and a plain test.csv with its first 20 rows."""
    root = tmp_path_factory.mktemp("maze")
    shutil.copy(require_shared(TRAIN_PATH), root / "train.csv.gz")
    lines = gzip.open(require_shared(TEST_PATH), "rt").read().splitlines()
    (root / "test.csv").write_text("\n".join(lines[:21]) + "\n")
    return root


def test_real_file_counts() -> None:
    for name in (TRAIN_PATH, TEST_PATH):
        q, a = mz.read_maze_csv(require_shared(name))
        assert q.shape == a.shape == (1000, 900)


def test_maze_datamodule(maze_dir: Path) -> None:
    dm = datamodules.Maze(data_dir=str(maze_dir), val_size=8, test_size=12, batch_size=16, eval_batch_size=5)
    assert (dm.vocab_size, dm.seq_len, dm.num_puzzle_ids, dm.side) == (6, 900, 1, 30)
    dm.prepare_data()
    dm.setup()
    assert len(dm.datasets["train"]) == 8000
    assert (len(dm.datasets["val"]), len(dm.datasets["test"])) == (8, 12)
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == batch["labels"].shape == (16, 900)
    assert batch["puzzle_ids"].shape == (16,)
    evaluator = dm.evaluator("val")
    evaluator.update(batch, batch["labels"], torch.zeros(16))
    assert evaluator.compute() == {"valid_path": 1.0}
    evaluator.update(batch, batch["inputs"], torch.zeros(16))  # the maze itself marks no path
    assert evaluator.compute() == {"valid_path": 0.5}
    evaluator.reset()
    evaluator.update(batch, batch["inputs"], torch.zeros(16))
    assert evaluator.compute() == {"valid_path": 0.0}
    test = next(iter(dm.test_dataloader()))
    q, _ = mz.read_maze_csv(maze_dir / "test.csv")
    assert torch.equal(test["inputs"], torch.from_numpy(q[:5].astype(np.int64)))  # not augmented, in order
    plain = datamodules.Maze(data_dir=str(maze_dir), augment=False, val_size=4)
    plain.setup()
    assert len(plain.datasets["train"]) == 1000 and len(plain.datasets["test"]) == 20


def test_missing_data_and_bad_rows_are_named(tmp_path: Path, train_rows: list[list[str]]) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="sapientinc/maze-30x30-hard-1k") as err:
        datamodules.Maze(data_dir=str(missing)).prepare_data()
    assert str(missing / "train.csv") in str(err.value)
    header = "source,question,answer,shortest_path_moves\n"
    source, question, answer, moves = train_rows[0]
    cases = {
        "invalid character 'x'": (question[:-1] + "x", answer, moves),
        "question has 899 characters": (question[:-1], answer, moves),
        "does not mark a shortest": (question, answer.replace("o", " ", 1), moves),
        "shortest_path_moves differs": (question, answer, str(int(moves) + 1)),
    }
    for message, (q, a, m) in cases.items():
        path = tmp_path / "bad.csv"
        path.write_text(header + f"{source},{question},{answer},{moves}\n{source},{q},{a},{m}\n")
        with pytest.raises(ValueError, match=f"bad.csv:3: .*{message}"):
            mz.read_maze_csv(path)


def test_generated_maze_datamodule_and_cache(tmp_path: Path) -> None:
    kwargs = dict(side=6, min_path=6, train_size=24, val_size=4, test_size=4, batch_size=8, cache_dir=str(tmp_path))
    dm = datamodules.GeneratedMaze(**kwargs)
    assert (dm.vocab_size, dm.seq_len, dm.num_puzzle_ids) == (6, 36, 1)
    dm.prepare_data()
    assert dm.cache_path is not None and dm.cache_path.is_file()
    dm.setup()
    train = dm.datasets["train"]
    assert len(train) == 24 * 8 and len(dm.datasets["val"]) == 4
    all_inputs = np.concatenate([dm._splits[s][0] for s in ("train", "val", "test")])
    assert len(np.unique(all_inputs, axis=0)) == 32
    batch = next(iter(dm.train_dataloader()))
    evaluator = dm.evaluator("test")
    evaluator.update(batch, batch["labels"], torch.zeros(len(batch["labels"])))
    assert evaluator.compute()["valid_path"] == 1.0
    again = datamodules.GeneratedMaze(**kwargs)
    again.setup()
    assert np.array_equal(again._splits["train"][0], dm._splits["train"][0])
