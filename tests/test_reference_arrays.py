"""datamodules.ReferenceArrays: directories built by the TRM reference builders (tests/data/reference, made from
../shared/data subsets; its README says how) read back to the source puzzles in rr's encoding, their ids and votes,
a CLI fit, and the refusals of broken directories."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import require_shared

from datamodules import ReferenceArrays, arc_rules, sudoku_rules
from datamodules.arc import PuzzleIdMap
from datamodules.dihedral import dihedral
from datamodules.maze import PathEvaluator, read_maze_csv
from datamodules.reference_arrays import parse_identifier
from datamodules.sudoku import _read_grids, decode
from datamodules.kinds import ARCKind, MazeKind, SudokuKind
from recursive_reasoning.cli import main

DATA = Path(__file__).parent / "data" / "reference"
SUDOKU = DATA / "sudoku-extreme-20-aug-2"  # train: rows 0-19 of train_random1k x (identity + 2); test: rows 20-29
MAZE = DATA / "maze-30x30-hard-3-aug"  # train: first 3 mazes x 8 dihedral copies; test: first 3 test mazes
ARC = DATA / "arc-3-tasks-aug-2"  # training 017c7c7b, 025d127b; evaluation 1d398264; identity + 2 copies each


def items(module: ReferenceArrays, split: str) -> dict[str, torch.Tensor]:
    """Every item of a split, stacked, in dataset order."""
    dataset = module.datasets[split]
    return dataset.__getitems__(list(range(len(dataset))))


def copy_of(source: Path, tmp_path: Path) -> Path:
    """A writable copy of a test directory."""
    return Path(shutil.copytree(source, tmp_path / source.name))


def test_sudoku_reads_back_the_csv_rows_in_rr_encoding() -> None:
    questions, answers = _read_grids(require_shared("data/sudoku-extreme/train_random1k.csv.gz"), limit=30)
    module = ReferenceArrays(str(SUDOKU), batch_size=4)
    module.setup()
    assert (module.vocab_size, module.seq_len, module.num_puzzle_ids) == (11, 81, 1)
    assert module.puzzle_kind.describe() == SudokuKind(9).describe()
    assert module.evaluator("val") is None
    test = items(module, "test")
    assert torch.equal(test["inputs"], torch.from_numpy(questions[20:30] + 1).long())  # rr: 1 blank, 2..10 digits
    assert torch.equal(decode(test["labels"]), torch.from_numpy(answers[20:30]).long())
    train = items(module, "train")
    rows = module.datasets["train"].rows
    assert sorted(rows.tolist()) == list(range(60))  # equal groups: an epoch is every example once
    order = np.argsort(rows)
    q, a = decode(train["inputs"][order]).numpy(), decode(train["labels"][order]).numpy()
    assert np.array_equal(q[::3], questions[:20]) and np.array_equal(a[::3], answers[:20])  # identity first
    assert sudoku_rules.valid_solutions(a).all() and sudoku_rules.is_consistent(q, a).all()
    givens = (q > 0).sum(axis=1).reshape(20, 3)
    assert (givens == givens[:, :1]).all() and not np.array_equal(q[1::3], questions[:20])
    assert (train["puzzle_ids"] == 0).all()


def test_maze_reads_back_the_csv_rows_and_the_reference_dihedral_order() -> None:
    train_q, train_a = read_maze_csv(require_shared("data/maze-30x30-hard-1k/train.csv.gz"), limit=3)
    test_q, test_a = read_maze_csv(require_shared("data/maze-30x30-hard-1k/test.csv.gz"), limit=3)
    module = ReferenceArrays(str(MAZE), batch_size=4)
    module.setup()
    assert (module.vocab_size, module.seq_len, module.num_puzzle_ids) == (6, 900, 1)
    assert module.puzzle_kind.describe() == MazeKind(30).describe()
    test = items(module, "test")
    assert np.array_equal(test["inputs"].numpy(), test_q) and np.array_equal(test["labels"].numpy(), test_a)
    train = items(module, "train")
    order = np.argsort(module.datasets["train"].rows)
    got = train["inputs"][order].numpy().reshape(3, 8, 30, 30)
    labels = train["labels"][order].numpy().reshape(3, 8, 30, 30)
    for m in range(3):
        for k in range(8):  # the reference's transform k is rr's dihedral k
            assert np.array_equal(got[m, k], dihedral(train_q[m].reshape(30, 30), k))
            assert np.array_equal(labels[m, k], dihedral(train_a[m].reshape(30, 30), k))
    evaluator = module.evaluator("test")
    assert isinstance(evaluator, PathEvaluator)
    evaluator.update(test, test["labels"], torch.zeros(3))
    assert float(evaluator.compute()["valid_path"]) == 1.0
    evaluator.reset()
    evaluator.update(test, test["inputs"], torch.zeros(3))
    assert float(evaluator.compute()["valid_path"]) == 0.0


def _arc_tasks() -> dict[str, dict]:
    """The three source tasks with their test outputs, from TRM's Kaggle files."""
    tasks = {}
    for subset in ("training", "evaluation"):
        base = f"data/trm-kaggle-combined/arc-agi_{subset}"
        with gzip.open(require_shared(f"{base}_challenges.json.gz"), "rt") as f:
            challenges = json.load(f)
        with gzip.open(require_shared(f"{base}_solutions.json.gz"), "rt") as f:
            solutions = json.load(f)
        for name in ("017c7c7b", "025d127b", "1d398264"):
            if name in challenges:
                task = challenges[name]
                for pair, output in zip(task["test"], solutions[name]):
                    pair["output"] = output
                tasks[name] = task
    return tasks


def _grid(tokens: np.ndarray) -> np.ndarray:
    """The colour grid of a canvas wherever it sits (the bounding box of the colour tokens)."""
    canvas = tokens.reshape(30, 30)
    rows, cols = np.nonzero(canvas >= 2)
    return (canvas[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] - 2).astype(np.uint8)


def test_arc_ids_map_every_example_back_to_its_source_task() -> None:
    tasks = _arc_tasks()
    module = ReferenceArrays(str(ARC), batch_size=4)
    module.setup()
    assert (module.vocab_size, module.seq_len, module.num_puzzle_ids) == (12, 900, 10)
    assert isinstance(module.puzzle_kind, ARCKind) and module.puzzle_kind.puzzle_map is module.puzzle_map
    names = json.loads((ARC / "identifiers.json").read_text())
    puzzle_map = module.puzzle_map
    assert sorted(puzzle_map.task_names) == sorted(f"reference:{t}" for t in tasks)
    for puzzle_id, name in enumerate(names[1:], 1):
        base, _, rest = name.partition("|||")
        expected = f"reference:{base}|" + (f"t{rest[1]}_{rest[-9:]}" if rest else "t0_123456789")
        assert puzzle_map.name(puzzle_id) == expected
    for split in ("train", "test"):
        batch = items(module, split)
        assert (batch["labels"] != 0).all()  # the reference's ignore label 0 (PAD) is rr's -100
        for x, y, pid in zip(batch["inputs"].numpy(), batch["labels"].numpy(), batch["puzzle_ids"].tolist()):
            task = tasks[puzzle_map.task_names[puzzle_map.task_of_id[pid]].removeprefix("reference:")]
            augmentation = puzzle_map.augmentations[pid]
            pair = (arc_rules.restore(_grid(x), augmentation), arc_rules.restore(_grid(y), augmentation))
            if split == "test":
                sources = task["test"]
            else:  # the evaluation task's test pairs never train
                sources = task["train"] + (task["test"] if task is not tasks["1d398264"] else [])
            assert any(np.array_equal(pair[0], p["input"]) and np.array_equal(pair[1], p["output"]) for p in sources)


def test_arc_evaluator_votes_over_the_reference_copies() -> None:
    module = ReferenceArrays(str(ARC), batch_size=4)
    module.setup()
    test = items(module, "test")
    evaluator = module.evaluator("test")
    assert evaluator.num_examples == 6  # 2 test inputs x 3 copies
    right = test["labels"].clamp_min(0)
    evaluator.update(test, right, torch.zeros(6))
    scores = evaluator.compute()
    assert float(scores["pass@1"]) == 1.0 and float(scores["coverage"]) == 1.0
    solutions = _arc_tasks()["1d398264"]["test"]
    assert [entry["attempt_1"] for entry in evaluator.submission()["1d398264"]] == [p["output"] for p in solutions]
    evaluator.reset()
    wrong = right.clone()
    wrong[:4] = test["inputs"][:4]  # two of three copies of each input vote for its input grid
    evaluator.update(test, wrong, torch.zeros(6))
    scores = evaluator.compute()
    assert float(scores["pass@1"]) == 0.0 and float(scores["pass@2"]) == 1.0


def test_arc_reads_hrm_names_and_guards_checkpoints(tmp_path: Path) -> None:
    path = copy_of(ARC, tmp_path)
    trm = ReferenceArrays(str(ARC)).puzzle_map
    names = json.loads((ARC / "identifiers.json").read_text())
    hrm = [name.replace("|||t", "_t").replace("|||", "_") for name in names]
    (path / "identifiers.json").write_text(json.dumps(hrm))
    module = ReferenceArrays(str(path))
    assert module.puzzle_map.difference(trm) is None
    state = module.state_dict()
    assert state["puzzle_kind"] == ARCKind().describe() and PuzzleIdMap.from_state_dict(state["puzzle_map"])
    module.check_checkpoint({"ReferenceArrays": state})
    module.check_checkpoint({"state_dict": {}})  # e.g. `rr import` of a reference checkpoint: ids taken as they are
    swapped = list(hrm)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    (path / "identifiers.json").write_text(json.dumps(swapped))
    with pytest.raises(ValueError, match="puzzle-id map differs.*id 2"):
        ReferenceArrays(str(path)).check_checkpoint({"ReferenceArrays": state})
    with pytest.raises(ValueError, match="trained with datamodules.ARC"):
        module.check_checkpoint({"ARC": {"puzzle_map": {}}})
    with pytest.raises(ValueError, match="t0..t7"):
        parse_identifier("017c7c7b|||t9|||0123456789")
    (path / "identifiers.json").write_text(json.dumps(names[:5]))
    with pytest.raises(ValueError, match="must list 10 names"):
        ReferenceArrays(str(path)).prepare_data()


def test_training_visits_every_group_equally_often(tmp_path: Path) -> None:
    path = copy_of(SUDOKU, tmp_path)
    groups = np.array([0, 3, 6, *range(7, 61)], dtype=np.int32)  # groups of 3, 3, 1, 1, ... puzzles (one example each)
    np.save(path / "train" / "all__group_indices.npy", groups)
    module = ReferenceArrays(str(path), seed=3)
    module.setup()
    rows = module.datasets["train"].rows
    assert len(rows) == 56 * 3  # 56 groups, each visited as often as the largest has puzzles
    assert sorted(rows[rows < 6].tolist()) == list(range(6)) and np.bincount(rows[rows >= 6]).max() == 3


def test_fit_from_the_cli_on_a_reference_sudoku_directory(tmp_path: Path) -> None:
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": 3, "logger": False, "limit_val_batches": 1,
                    "val_check_interval": 3, "enable_progress_bar": False, "enable_model_summary": False,
                    "default_root_dir": str(tmp_path)},
        "model": {"strategy": {"class_path": "strategies.TRM",
                               "init_args": {"cycles": 1, "latent_steps": 1, "supervision_steps": 2}},
                  "network": {"hidden_size": 16, "num_heads": 2, "num_layers": 1, "mixer": "mlp",
                              "positions": "none", "puzzle_emb_len": 0},
                  "optim": {"lr": 1e-3, "warmup_steps": 0}},
        "data": {"class_path": "datamodules.ReferenceArrays",
                 "init_args": {"path": str(SUDOKU), "batch_size": 8, "eval_batch_size": 10}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(tmp_path / "config.yaml")])
    [checkpoint] = tmp_path.rglob("*.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["ReferenceArrays"]["puzzle_kind"] == SudokuKind(9).describe()
    assert saved["global_step"] == 3 and saved["hyper_parameters"]["vocab_size"] == 11


def _edit_json(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / "test" / "dataset.json").unlink(), "test/dataset.json is missing"),
        (lambda p: (p / "train" / "all__labels.npy").unlink(), "missing array files: .*train/all__labels.npy"),
        (lambda p: np.save(p / "train" / "all__labels.npy", np.ones((59, 81), np.uint8) * 2),
         r"inputs.npy has shape \(60, 81\) but .*labels.npy \(59, 81\)"),
        (lambda p: np.save(p / "test" / "all__inputs.npy", np.ones((10, 80), np.uint8)),
         r"shape \(10, 80\).*expected integers \[N, 81\]"),
        (lambda p: np.save(p / "train" / "all__puzzle_indices.npy", np.arange(60, dtype=np.int32)),
         "puzzle_indices.npy must be 1-d increasing offsets from 0 to 60 into the examples"),
        (lambda p: _edit_json(p / "train" / "dataset.json", vocab_size=13),
         "disagree on \\['vocab_size'\\]"),
        (lambda p: [_edit_json(p / s / "dataset.json", vocab_size=13) for s in ("train", "test")],
         "vocab_size=13 and seq_len=81, which no known builder writes.*kind='tokens'"),
        (lambda p: [_edit_json(p / s / "dataset.json", sets=["all", "extra"]) for s in ("train", "test")],
         "only the builders' single set 'all'"),
    ],
)
def test_broken_directories_are_refused_with_the_problem_named(tmp_path: Path, damage, message: str) -> None:
    path = copy_of(SUDOKU, tmp_path)
    damage(path)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        ReferenceArrays(str(path)).setup()


def test_tokens_outside_the_kinds_alphabet_and_wrong_kinds_are_refused(tmp_path: Path) -> None:
    path = copy_of(SUDOKU, tmp_path)
    labels = np.load(path / "train" / "all__labels.npy")
    labels[7, 5] = 1  # the blank token as a solution digit
    np.save(path / "train" / "all__labels.npy", labels)
    with pytest.raises(ValueError, match="row 7 has token 1 at position 5, but sudoku label uses tokens 2..10"):
        ReferenceArrays(str(path)).setup()
    plain = ReferenceArrays(str(path), kind="tokens")
    plain.setup()
    assert plain.puzzle_kind is None and plain.evaluator("val") is None
    with pytest.raises(ValueError, match="kind='maze' but .* which is sudoku"):
        ReferenceArrays(str(SUDOKU), kind="maze").prepare_data()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ReferenceArrays(str(tmp_path / "nowhere")).prepare_data()
    with pytest.raises(ValueError, match="kind must be one of"):
        ReferenceArrays(str(SUDOKU), kind="chess")


def test_a_shape_two_kinds_fit_needs_the_kind_named(tmp_path: Path) -> None:
    path = copy_of(SUDOKU, tmp_path)
    for split in ("train", "test"):
        rows = len(np.load(path / split / "all__inputs.npy"))
        for field in ("inputs", "labels"):
            np.save(path / split / f"all__{field}.npy", np.full((rows, 16), 2, np.uint8))  # open cells / digit 1
        _edit_json(path / split / "dataset.json", seq_len=16, vocab_size=6)  # a 4x4 Sudoku or a 4x4 maze
    with pytest.raises(ValueError, match=r"fits the kinds \['maze', 'sudoku'\]; pass kind="):
        ReferenceArrays(str(path)).prepare_data()
    maze = ReferenceArrays(str(path), kind="maze")
    maze.setup()
    assert maze.puzzle_kind.describe() == MazeKind(4).describe() and isinstance(maze.evaluator("val"), PathEvaluator)
    assert ReferenceArrays(str(path), kind="sudoku").puzzle_kind.describe() == SudokuKind(4).describe()
