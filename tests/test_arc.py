"""ARC data: reading the real task files, augmentations and their inverses, the canvas encoding, puzzle ids, the
evaluation-leak guard, the checkpoint map check and bad input."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_shared

from datamodules import arc_rules as ar
from datamodules.arc import ARC, IGNORE_LABEL, PuzzleIdMap
from datamodules.dihedral import dihedral


def _counts(tasks: dict[str, ar.Task]) -> tuple[int, int, int, int]:
    """Tasks, demonstration pairs, test inputs, test outputs."""
    return (len(tasks), sum(len(t.train) for t in tasks.values()), sum(len(t.test) for t in tasks.values()),
            sum(p.output is not None for t in tasks.values() for p in t.test))


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("arc-agi-1/training.json.gz", (400, 1302, 416, 416)),
        ("arc-agi-1/evaluation.json.gz", (400, 1363, 419, 419)),
        ("arc-agi-2/training.json.gz", (1000, 3232, 1076, 1076)),
        ("arc-agi-2/evaluation.json.gz", (120, 359, 167, 167)),
        ("conceptarc/corpus.json.gz", (160, 427, 480, 480)),
        ("trm-kaggle-combined/arc-agi_evaluation2_challenges.json.gz", (120, None, 172, 172)),
    ],
)
def test_real_files_match_the_data_readme(relative: str, expected: tuple[int | None, ...]) -> None:
    tasks = ar.read_tasks(require_shared(f"data/{relative}"))
    got = _counts(tasks)
    assert all(e is None or g == e for g, e in zip(got, expected)), got
    grid = next(iter(tasks.values())).train[0].input
    assert grid.dtype == np.uint8 and grid.ndim == 2 and grid.max() <= 9


def test_a_directory_of_task_files_reads_like_the_combined_file(tmp_path: Path) -> None:
    with gzip.open(require_shared("data/arc-agi-1/training.json.gz"), "rt") as f:
        combined = json.load(f)
    for name in list(combined)[:3]:
        (tmp_path / f"{name}.json").write_text(json.dumps(combined[name]))
    tasks = ar.read_tasks(tmp_path)
    assert list(tasks) == sorted(combined)[:3]
    first = tasks[sorted(combined)[0]]
    assert first.train[0].output.tolist() == combined[first.name]["train"][0]["output"]


def _random_augmentation(rng: np.random.Generator, k: int) -> np.ndarray:
    return np.concatenate([[k, 0], 1 + rng.permutation(9)]).astype(np.uint8)


@pytest.mark.parametrize("k", range(8))
def test_every_augmentation_is_undone_by_its_inverse(k: int) -> None:
    rng = np.random.default_rng(k)
    for h, w in ((1, 1), (3, 7), (30, 2), (13, 30)):
        grid = rng.integers(0, 10, (h, w)).astype(np.uint8)
        augmentation = _random_augmentation(rng, k)
        moved = ar.apply_augmentation(grid, augmentation)
        assert moved.shape == dihedral(grid, k).shape
        assert (moved == 0).sum() == (grid == 0).sum()  # colour 0 stays put under the permutation
        np.testing.assert_array_equal(ar.restore(moved, augmentation), grid)


def _canvas(grid: np.ndarray, row: int, col: int) -> np.ndarray:
    """The spec's encoding written out plainly for one grid: colours + 2 at the offset, EOS below and right."""
    h, w = grid.shape
    out = np.zeros((30, 30), dtype=np.int64)
    out[row:row + h, col:col + w] = grid.astype(np.int64) + 2
    if row + h < 30:
        out[row + h, col:col + w] = 1
    if col + w < 30:
        out[row:row + h, col + w] = 1
    return out.reshape(-1)


def test_canvas_encoding_matches_the_plain_definition_and_crops_back() -> None:
    rng = np.random.default_rng(0)
    shapes = [(1, 1), (2, 5), (30, 30), (30, 4), (7, 30), (11, 13)]
    grids = [rng.integers(0, 10, s).astype(np.uint8) for s in shapes]
    bank = np.zeros((len(grids), 30, 30), dtype=np.uint8)
    for i, g in enumerate(grids):
        bank[i, : g.shape[0], : g.shape[1]] = g
    size = np.array(shapes)
    for k in range(8):
        augmentations = np.stack([_random_augmentation(rng, k) for _ in grids])
        moved = [ar.apply_augmentation(g, a) for g, a in zip(grids, augmentations)]
        offsets = np.array([[rng.integers(0, 31 - m.shape[0]), rng.integers(0, 31 - m.shape[1])] for m in moved])
        tokens = ar.encode(bank, size, np.arange(len(grids)), augmentations, offsets)
        expected = np.stack([_canvas(m, r, c) for m, (r, c) in zip(moved, offsets)])
        np.testing.assert_array_equal(tokens, expected)
        at_origin = ar.encode(bank, size, np.arange(len(grids)), augmentations, np.zeros_like(offsets))
        for i, grid in enumerate(grids):
            np.testing.assert_array_equal(ar.restore(ar.crop(at_origin[i]), augmentations[i]), grid)


def test_crop_takes_the_largest_top_left_colour_rectangle() -> None:
    canvas = np.zeros((30, 30), dtype=np.int64)
    canvas[:3, :4] = 5
    canvas[3, :2] = 7  # a shorter fourth row: 4x2 = 8 < 3x4 = 12, so 3x4 wins
    canvas[0, 4] = 1
    assert ar.crop(canvas.reshape(-1)).shape == (3, 4)
    canvas[3:6, :4] = 6  # now 6x4 beats 3x4
    assert ar.crop(canvas.reshape(-1)).shape == (6, 4)
    assert ar.crop(np.zeros(900, dtype=np.int64)).shape == (0, 0)


def _task(grids: list[list[list[int]]]) -> ar.Task:
    pairs = tuple(ar.Pair(np.array(g, dtype=np.uint8), np.array(g, dtype=np.uint8)) for g in grids)
    return ar.Task("t", pairs, ())


def test_augmentation_plan_rejects_duplicates_and_is_seeded() -> None:
    task = ar.read_tasks(require_shared("data/arc-agi-1/training.json.gz"))["007bbfb7"]
    plan = ar.plan_augmentations(task, 50, np.random.default_rng(1))
    assert len(plan) == 51 and np.array_equal(plan[0], ar.IDENTITY)
    contents = {b"".join(ar.apply_augmentation(g, a).tobytes() + bytes(ar.apply_augmentation(g, a).shape)
                         for g in task.grids()) for a in plan}
    assert len(contents) == 51
    assert np.array_equal(plan, ar.plan_augmentations(task, 50, np.random.default_rng(1)))
    # One colour on a fully symmetric grid: only the 9 recolourings differ, whatever the transform.
    single = _task([[[0, 3, 0], [3, 3, 3], [0, 3, 0]]])
    assert len(ar.plan_augmentations(single, 100, np.random.default_rng(0))) == 9


@pytest.fixture(scope="module")
def small_arc() -> ARC:
    data = require_shared("data")
    dm = ARC(data_dir=str(data), max_tasks=3, augmentations=4, val_tasks=2, batch_size=4, seed=0)
    dm.setup()
    return dm


def test_splits_ids_and_examples(small_arc: ARC) -> None:
    plan = small_arc._planned()
    tasks = {name: ar.read_tasks(require_shared(f"data/{name}.json.gz")) for name in
             ("arc-agi-1/training", "conceptarc/corpus", "arc-agi-1/evaluation")}
    first = {name: [tasks[name][k] for k in sorted(tasks[name])[:3]] for name in tasks}
    copies = np.bincount(small_arc.puzzle_map.task_of_id[1:], minlength=9)
    assert small_arc.num_puzzle_ids == 1 + copies.sum() and (copies <= 5).all() and (copies >= 1).all()
    # Training: every pair of the training sets and the demonstrations of the evaluation set, once per copy.
    per_task = [len(t.train) + len(t.test) for n in ("arc-agi-1/training", "conceptarc/corpus") for t in first[n]]
    per_task += [len(t.train) for t in first["arc-agi-1/evaluation"]]
    assert len(small_arc.datasets["train"]) == int(np.dot(per_task, copies))
    assert len(small_arc.datasets["test"]) == int(np.dot([len(t.test) for t in first["arc-agi-1/evaluation"]],
                                                         copies[6:]))
    assert len(small_arc.datasets["val"]) == int(np.dot([len(t.test) for t in first["arc-agi-1/evaluation"][:2]],
                                                        copies[6:8]))
    assert small_arc.puzzle_map.name(0) == "<blank>"
    assert small_arc.puzzle_map.name(1).startswith("arc-agi-1/training:007bbfb7|t0_123456789")
    assert set(plan["test"][:, 0]) <= set(np.flatnonzero(small_arc.puzzle_map.task_of_id >= 6))


def test_training_items_are_translated_deterministically_and_evaluation_is_not(small_arc: ARC) -> None:
    train, test = small_arc.datasets["train"], small_arc.datasets["test"]
    items = [train[i] for i in range(len(train))]
    again = train.__getitems__(list(range(len(train))))
    assert torch.equal(torch.stack([item["inputs"] for item in items]), again["inputs"])
    shifted = 0
    for item in items:
        grid = item["inputs"].view(30, 30)
        labels = item["labels"].view(30, 30)
        assert set(item["labels"].unique().tolist()) <= {IGNORE_LABEL, 1, *range(2, 12)}
        assert (labels != IGNORE_LABEL).any() and (grid > 1).any()
        shifted += int(grid[0, 0] == 0)
    assert shifted > len(items) // 2  # most pairs sit away from the corner
    assert (test.__getitems__(list(range(len(test))))["inputs"][:, 0] >= 2).all()  # at the canvas origin
    assert test.__getitems__([3, 1])["example_ids"].tolist() == [3, 1]


def test_one_training_pair_of_every_puzzle_id_stays_at_the_origin(small_arc: ARC) -> None:
    """As the reference builder (build_arc_dataset.py, no_aug_id): one random pair per augmented puzzle untranslated."""
    train = small_arc.datasets["train"]
    idx = np.arange(len(train))
    rows = train.rows[idx]
    offsets = train._offsets(idx, rows, train.augmentations[rows[:, 0]])
    origin = train.origin
    assert origin is not None and (offsets[origin] == 0).all()
    ids = rows[:, 0]
    assert (np.bincount(ids[origin], minlength=small_arc.num_puzzle_ids)[1:] == 1).all()  # exactly one per id
    pair_of_row = np.array([np.count_nonzero(ids[:i] == ids[i]) for i in idx])  # rows run pair by pair per task
    assert len(set(pair_of_row[origin].tolist())) > 1, "the kept pair is drawn per id, not always the first"
    # The old behaviour: every pair translated, the same offsets elsewhere; the choice is seeded, so it repeats.
    data = require_shared("data")
    everywhere = ARC(data_dir=str(data), max_tasks=3, augmentations=4, val_tasks=2, seed=0, origin_pair=False)
    everywhere.setup()
    other = everywhere.datasets["train"]
    assert other.origin is None
    moved = other._offsets(idx, rows, other.augmentations[rows[:, 0]])
    np.testing.assert_array_equal(moved[~origin], offsets[~origin])
    assert (moved[origin] != 0).any(axis=1).mean() > 0.5
    np.testing.assert_array_equal(everywhere._planned()["train_origin"], origin)  # a second plan draws the same


def test_the_same_settings_give_the_same_ids(small_arc: ARC) -> None:
    data = require_shared("data")
    same = ARC(data_dir=str(data), max_tasks=3, augmentations=4, seed=0)
    other = ARC(data_dir=str(data), max_tasks=3, augmentations=4, seed=1)
    assert small_arc.puzzle_map.difference(same.puzzle_map) is None
    assert small_arc.puzzle_map.difference(other.puzzle_map) is not None
    restored = PuzzleIdMap.from_state_dict(small_arc.state_dict()["puzzle_map"])
    assert small_arc.puzzle_map.difference(restored) is None


def test_checkpoint_with_another_map_is_refused(small_arc: ARC) -> None:
    other = ARC(data_dir=str(require_shared("data")), max_tasks=3, augmentations=4, seed=1)
    checkpoint = {"ARC": other.state_dict()}
    with pytest.raises(ValueError, match="puzzle-id map differs"):
        small_arc.check_checkpoint(checkpoint)
    small_arc.check_checkpoint({"ARC": small_arc.state_dict()})
    with pytest.raises(ValueError, match="no ARC puzzle-id map"):
        small_arc.check_checkpoint({})


def test_arc2_training_with_arc1_evaluation_is_refused() -> None:
    data = str(require_shared("data"))
    with pytest.raises(ValueError, match="do not train on ARC-AGI-2 and evaluate on ARC-AGI-1"):
        _ = ARC(data_dir=data, train_sets=["arc-agi-2/training"], augmentations=0).num_puzzle_ids
    arc2 = ARC(data_dir=data, train_sets=["arc-agi-2/training"], eval_set="arc-agi-2/evaluation", augmentations=0)
    arc1 = ARC(data_dir=data, train_sets=["arc-agi-1/training"], augmentations=0)
    with pytest.raises(ValueError, match="evaluate such a model on ARC-AGI-2"):
        arc1.check_checkpoint({"ARC": arc2.state_dict()})


def _write_task(tmp_path: Path, task: object, name: str = "bad") -> Path:
    directory = tmp_path / "set"
    directory.mkdir(exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(task))
    return directory


GOOD = {"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"train": [{"input": [[0] * 31], "output": [[0]]}], "test": []}, "1x31; ARC grids are 1..30"),
        ({"train": [{"input": [[0]] * 31, "output": [[0]]}], "test": []}, "31x1"),
        ({"train": [{"input": [[1, 10]], "output": [[0]]}], "test": []}, "colour 10 at row 0, column 1"),
        ({"train": [{"input": [[1, -1]], "output": [[0]]}], "test": []}, "colour -1"),
        ({"train": [{"input": [[1, 2], [3]], "output": [[0]]}], "test": []}, "ragged grid"),
        ({"train": [{"input": [[1.5]], "output": [[0]]}], "test": []}, "ints 0..9"),
        ({"train": [{"input": [], "output": [[0]]}], "test": []}, "non-empty list of rows"),
        ({"train": [{"input": [[1]]}], "test": []}, "needs an 'output' grid"),
        ({"train": [GOOD]}, "'train' and 'test' lists"),
        ({"train": [], "test": [GOOD]}, "no demonstration pairs"),
    ],
)
def test_bad_tasks_are_named(tmp_path: Path, task: object, message: str) -> None:
    with pytest.raises(ValueError, match="bad") as info:
        ar.read_tasks(_write_task(tmp_path, task))
    assert message in str(info.value)


def test_malformed_json_and_missing_sets_are_named(tmp_path: Path) -> None:
    directory = tmp_path / "set"
    directory.mkdir()
    (directory / "broken.json").write_text('{"train": [')
    with pytest.raises(ValueError, match=r"broken.json: not valid JSON"):
        ar.read_tasks(directory)
    with pytest.raises(FileNotFoundError, match="nowhere/training"):
        ARC(data_dir=str(tmp_path / "nowhere"), train_sets=["training"], eval_set="evaluation").prepare_data()


def _write_sets(root: Path, shared_pair: dict) -> None:
    """A training set of two tasks and an evaluation set of two, whose first test pair is also a training pair."""
    sets = {
        "train": {"t1": {"train": [GOOD, shared_pair], "test": [{"input": [[5]], "output": [[6]]}]},
                  "t2": {"train": [{"input": [[1, 1]], "output": [[2, 2]]}], "test": []}},
        "eval": {"e1": {"train": [{"input": [[7, 0]], "output": [[0, 7]]}], "test": [shared_pair]},
                 "e2": {"train": [{"input": [[3]], "output": [[3, 3]]}], "test": [{"input": [[4]], "output": [[4, 4]]},
                                                                                 {"input": [[8]]}]}},
    }
    for set_name, tasks in sets.items():
        (root / set_name).mkdir(parents=True, exist_ok=True)
        for name, task in tasks.items():
            (root / set_name / f"{name}.json").write_text(json.dumps(task))


def _arc(root: Path, **kwargs: object) -> ARC:
    options = dict(data_dir=str(root), train_sets=["train"], eval_set="eval", augmentations=3, seed=0,
                   cache_dir=str(root / "cache"))
    return ARC(**{**options, **kwargs})


def test_plan_is_cached_keyed_by_its_inputs_and_warns_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = {"input": [[1, 0], [0, 2]], "output": [[2, 0], [0, 1]]}
    _write_sets(tmp_path, shared)
    with pytest.warns(UserWarning, match="1 evaluation tasks of 'eval' have a test pair that also appears"):
        built = _arc(tmp_path)._planned()
    assert len(list((tmp_path / "cache").glob("arc_plan_*.npz"))) == 1

    def refuse(self: ARC) -> dict:
        raise AssertionError("planned again although the cache holds this plan")

    with monkeypatch.context() as patch:
        patch.setattr(ARC, "_build_plan", refuse)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the duplicate warning is printed when the plan is built, not loaded
            cached = _arc(tmp_path)._planned()
    assert cached["map"].difference(built["map"]) is None and cached["map"].task_names == built["map"].task_names
    for name in ("bank", "shapes", "train", "train_origin", "test", "rank_of_id", "train_pair_hashes",
                 "test_pair_hashes"):
        np.testing.assert_array_equal(cached[name], built[name], err_msg=name)
        assert cached[name].dtype == built[name].dtype, name
    assert cached["eval_task_names"] == built["eval_task_names"] == ["e1", "e2"]
    assert [[None if g is None else g.tolist() for g in t] for t in cached["test_outputs"]] == [
        [shared["output"]], [[[4, 4]], None]]
    assert all(g is None or g.dtype == np.uint8 for t in cached["test_outputs"] for g in t)

    # Any changed input plans anew: another seed or augmentation count, or a task file's content.
    built_again: list[int] = []
    original = ARC._build_plan

    def counting(self: ARC) -> dict:
        built_again.append(1)
        return original(self)

    monkeypatch.setattr(ARC, "_build_plan", counting)
    _arc(tmp_path, seed=1)._planned()
    _arc(tmp_path, augmentations=2)._planned()
    (tmp_path / "train" / "t2.json").write_text(json.dumps({"train": [{"input": [[1]], "output": [[2]]}], "test": []}))
    changed = _arc(tmp_path)._planned()
    assert len(built_again) == 3
    assert len(changed["train"]) != len(built["train"]) or not np.array_equal(changed["bank"], built["bank"])
    _arc(tmp_path, cache_dir=None)._planned()
    assert len(built_again) == 4 and len(list((tmp_path / "cache").glob("arc_plan_*.npz"))) == 4
