"""Tests of the ARC voting evaluator: ranking, pass@k, per-task scores, de-duplication, reset, submission file, DDP."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from datamodules import arc_rules as ar
from datamodules.arc_eval import ARCEvaluator, restore_batch

A = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)
B0 = np.array([[7, 0], [0, 8], [9, 9]], dtype=np.uint8)
B1 = np.array([[3, 3, 0, 1]], dtype=np.uint8)
HIDDEN_GUESS = np.array([[5]], dtype=np.uint8)
WRONG = np.array([[1, 1], [1, 1]], dtype=np.uint8)
OTHER = np.array([[2, 2, 2]], dtype=np.uint8)
# Task a: one test input; task b: two; task c: one whose output is unknown (a hidden test set).
TASKS: dict[str, list[np.ndarray | None]] = {"a": [A], "b": [B0, B1], "c": [None]}
KS = (1, 2, 5)


@dataclass
class Table:
    """An evaluation split: example e is augmented copy of test input pair[e] of task task[e]."""

    names: list[str]
    outputs: list[list[np.ndarray | None]]
    task: np.ndarray
    pair: np.ndarray
    augmentation: np.ndarray

    def ids(self, name: str, pair: int = 0) -> list[int]:
        """Example ids of one test input, in order."""
        t = self.names.index(name)
        return np.flatnonzero((self.task == t) & (self.pair == pair)).tolist()

    def evaluator(self, **kwargs: object) -> ARCEvaluator:
        return ARCEvaluator(self.names, self.outputs, self.task, self.pair, self.augmentation, **kwargs)


def make_table(tasks: dict[str, list[np.ndarray | None]] = TASKS, copies: int = 4, seed: int = 0) -> Table:
    """`copies` augmented copies of every test input: copy i uses dihedral transform i % 8 and a random colour map."""
    rng = np.random.default_rng(seed)
    task, pair, augmentation = [], [], []
    for t, outputs in enumerate(tasks.values()):
        for p in range(len(outputs)):
            for copy in range(copies):
                colours = np.concatenate([[0], rng.permutation(np.arange(1, 10))]) if copy else np.arange(10)
                task.append(t)
                pair.append(p)
                augmentation.append(np.concatenate([[copy % 8], colours]).astype(np.uint8))
    return Table(list(tasks), list(tasks.values()), np.array(task), np.array(pair), np.stack(augmentation))


def canvas(grid: np.ndarray, augmentation: np.ndarray) -> np.ndarray:
    """Tokens [900] of a model that predicts `grid` (in the task's frame) for an example augmented by `augmentation`."""
    bank = np.zeros((1, ar.CANVAS, ar.CANVAS), dtype=np.uint8)
    bank[0, : grid.shape[0], : grid.shape[1]] = grid
    shapes = np.array([grid.shape], dtype=np.int64)
    return ar.encode(bank, shapes, np.array([0]), augmentation[None], np.zeros((1, 2), dtype=np.int64))[0]


def feed(
    evaluator: ARCEvaluator, table: Table, votes: dict[int, np.ndarray], logits: dict[int, float] | None = None
) -> None:
    """Update with one prediction per example id (in batches of 3, ids in the order given)."""
    ids = list(votes)
    tokens = np.stack([canvas(votes[e], table.augmentation[e]) for e in ids])
    halt = [0.0 if logits is None else logits.get(e, 0.0) for e in ids]
    for i in range(0, len(ids), 3):
        evaluator.update(
            {"example_ids": torch.tensor(ids[i : i + 3])},
            torch.from_numpy(tokens[i : i + 3]),
            torch.tensor(halt[i : i + 3]),
        )


def scores(evaluator: ARCEvaluator) -> dict[str, float]:
    return {name: float(value) for name, value in evaluator.compute().items()}


def all_right(table: Table) -> dict[int, np.ndarray]:
    """Every example predicts its true output (the hidden task a fixed guess)."""
    outputs = [output for outputs in table.outputs for output in outputs]
    first = np.cumsum([0] + [len(o) for o in table.outputs])
    votes = {}
    for e, (t, p) in enumerate(zip(table.task, table.pair)):
        output = outputs[first[t] + p]
        votes[e] = HIDDEN_GUESS if output is None else output
    return votes


def test_canvas_helper_encodes_the_augmented_prediction() -> None:
    table = make_table(copies=8)
    for e in table.ids("b", 0):
        tokens = canvas(B0, table.augmentation[e])
        assert np.array_equal(ar.crop(tokens), ar.apply_augmentation(B0, table.augmentation[e]))
        assert np.array_equal(ar.restore(ar.crop(tokens), table.augmentation[e]), B0)


def test_restore_batch_matches_crop_then_restore() -> None:
    rng = np.random.default_rng(1)
    n = 400
    tokens = rng.integers(0, ar.VOCAB_SIZE, size=(n, 900))
    for i in range(0, n, 2):  # half of them hold a proper grid with EOS borders, the rest are noise
        h, w = rng.integers(1, 31, size=2)
        bank = rng.integers(0, 10, size=(1, 30, 30)).astype(np.uint8)
        tokens[i] = ar.encode(bank, np.array([[h, w]]), np.array([0]), ar.IDENTITY[None], np.zeros((1, 2), int))[0]
    tokens[3, 0] = ar.PAD  # an empty crop
    augmentation = np.zeros((n, 11), dtype=np.uint8)
    augmentation[:, 0] = np.arange(n) % 8
    augmentation[:, 2:] = rng.permuted(np.tile(np.arange(1, 10), (n, 1)), axis=1)
    canvases, shapes = restore_batch(tokens.astype(np.uint8), augmentation)
    for i in range(n):
        expected = ar.restore(ar.crop(tokens[i]), augmentation[i])
        h, w = shapes[i]
        assert (h, w) == expected.shape
        assert np.array_equal(canvases[i, :h, :w], expected)
        assert (canvases[i, h:, :] == 255).all() and (canvases[i, :, w:] == 255).all()


def test_right_answers_score_one() -> None:
    table = make_table()
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, all_right(table))
    assert scores(evaluator) == {"pass@1": 1.0, "pass@2": 1.0, "pass@5": 1.0, "coverage": 1.0}


def test_wrong_answers_score_zero() -> None:
    table = make_table()
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, {e: WRONG for e in range(len(table.task))})
    assert scores(evaluator) == {"pass@1": 0.0, "pass@2": 0.0, "pass@5": 0.0, "coverage": 1.0}


def test_wrong_shape_is_wrong() -> None:
    table = make_table({"a": [A]})
    evaluator = table.evaluator(ks=KS)
    extra_column = np.concatenate([A, np.zeros((2, 1), dtype=np.uint8)], axis=1)
    extra_row = np.concatenate([A, A[:1]], axis=0)
    feed(evaluator, table, {e: extra_column if e % 2 else extra_row for e in table.ids("a")})
    assert scores(evaluator)["pass@5"] == 0.0


def test_tie_on_count_is_broken_by_mean_q() -> None:
    table = make_table({"a": [A]})
    ids = table.ids("a")
    votes = {ids[0]: WRONG, ids[1]: A, ids[2]: WRONG, ids[3]: A}
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, votes, {ids[0]: 2.0, ids[1]: -1.0, ids[2]: -3.0, ids[3]: 1.5})  # means 0.57 vs 0.53 > 0
    assert scores(evaluator) == {"pass@1": 1.0, "pass@2": 1.0, "pass@5": 1.0, "coverage": 1.0}
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, votes, {ids[0]: 2.0, ids[1]: -1.0, ids[2]: 1.0, ids[3]: 1.5})
    assert scores(evaluator)["pass@1"] == 0.0


def test_tie_on_count_and_q_is_broken_by_first_appearance() -> None:
    table = make_table({"a": [A]})
    ids = table.ids("a")
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, {ids[3]: WRONG, ids[2]: A})  # fed in reverse: the lower example id still comes first
    assert scores(evaluator)["pass@1"] == 1.0
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, {ids[2]: WRONG, ids[3]: A})
    assert scores(evaluator)["pass@1"] == 0.0


def test_right_answer_ranked_second() -> None:
    table = make_table({"a": [A]})
    ids = table.ids("a")
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, {ids[0]: A, ids[1]: WRONG, ids[2]: WRONG, ids[3]: OTHER}, {ids[0]: 5.0})
    assert scores(evaluator) == {"pass@1": 0.0, "pass@2": 1.0, "pass@5": 1.0, "coverage": 1.0}


def test_task_scores_the_fraction_of_its_test_inputs() -> None:
    table = make_table()
    votes = all_right(table)
    for e in table.ids("b", 1):
        votes[e] = WRONG
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, votes)
    result = scores(evaluator)
    assert result["pass@1"] == (1.0 + 0.5) / 2  # task a solved, task b half solved, task c not scored
    assert result["pass@2"] == 0.75


def test_unpredicted_inputs_count_as_unsolved_and_coverage() -> None:
    table = make_table()
    votes = {e: grid for e, grid in all_right(table).items() if e not in table.ids("b", 0)}
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, votes)
    assert scores(evaluator) == {"pass@1": 0.75, "pass@2": 0.75, "pass@5": 0.75, "coverage": 0.75}


def test_duplicate_example_ids_are_counted_once() -> None:
    table = make_table({"a": [A]})
    ids = table.ids("a")
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, {ids[0]: WRONG, ids[1]: A, ids[2]: A})
    feed(evaluator, table, {ids[0]: WRONG})
    feed(evaluator, table, {ids[0]: WRONG, ids[1]: WRONG})  # a repeat keeps its first prediction
    assert scores(evaluator) == {"pass@1": 1.0, "pass@2": 1.0, "pass@5": 1.0, "coverage": 0.75}


def test_reset_leaves_no_votes(tmp_path: Path) -> None:
    table = make_table({"a": [A]})
    ids = table.ids("a")
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, {ids[0]: WRONG, ids[1]: WRONG, ids[2]: WRONG, ids[3]: A})
    assert scores(evaluator)["pass@1"] == 0.0
    evaluator.reset()
    with pytest.raises(RuntimeError, match="call compute"):
        evaluator.write(tmp_path, "after_reset")
    feed(evaluator, table, {ids[0]: A})
    assert scores(evaluator) == {"pass@1": 1.0, "pass@2": 1.0, "pass@5": 1.0, "coverage": 0.25}
    evaluator.reset()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert scores(evaluator) == {"pass@1": 0.0, "pass@2": 0.0, "pass@5": 0.0, "coverage": 0.0}


def test_unknown_output_is_not_scored_but_submitted(tmp_path: Path) -> None:
    table = make_table()
    votes = all_right(table)
    c = table.ids("c")
    votes.update({c[0]: OTHER, c[1]: OTHER, c[3]: WRONG})
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, votes)
    assert scores(evaluator)["pass@1"] == 1.0
    submission = json.loads(evaluator.write(tmp_path, "x").read_text())
    # c[2] kept the guess: a tie with WRONG (c[3]) on count and q, broken by the lower example id
    assert submission["c"] == [{"attempt_1": OTHER.tolist(), "attempt_2": HIDDEN_GUESS.tolist()}]

    only_hidden = make_table({"c": [None]})
    evaluator = only_hidden.evaluator(ks=KS)
    feed(evaluator, only_hidden, {0: OTHER})
    result = scores(evaluator)
    assert np.isnan(result["pass@1"]) and result["coverage"] == 0.25


def test_submission_file(tmp_path: Path) -> None:
    table = make_table()
    a, b0, c = table.ids("a"), table.ids("b", 0), table.ids("c")
    votes = {a[0]: WRONG, a[1]: A, a[2]: A, a[3]: OTHER, b0[0]: B0, b0[1]: B0, c[0]: HIDDEN_GUESS}
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, votes, {a[3]: 3.0})
    assert scores(evaluator)["pass@1"] == 0.75  # task a solved; task b: input 0 solved, input 1 never predicted
    path = evaluator.write(tmp_path / "out", "val_step10")
    assert path == tmp_path / "out" / "submission_val_step10.json"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left behind
    submission = json.loads(path.read_text())
    assert list(submission) == ["a", "b", "c"]
    assert submission["a"] == [{"attempt_1": A.tolist(), "attempt_2": OTHER.tolist()}]
    assert submission["b"] == [
        {"attempt_1": B0.tolist(), "attempt_2": B0.tolist()},  # one candidate: repeated
        {"attempt_1": [[0]], "attempt_2": [[0]]},  # no prediction at all
    ]
    assert submission["c"] == [{"attempt_1": HIDDEN_GUESS.tolist(), "attempt_2": HIDDEN_GUESS.tolist()}]

    evaluator = table.evaluator(ks=KS, attempts=3)
    feed(evaluator, table, votes, {a[3]: 3.0})
    evaluator.compute()
    submission = json.loads(evaluator.write(tmp_path / "out", "val_step10").read_text())
    assert submission["a"] == [{"attempt_1": A.tolist(), "attempt_2": OTHER.tolist(), "attempt_3": WRONG.tolist()}]


def test_bad_input_gives_clear_errors() -> None:
    table = make_table({"a": [A]})
    evaluator = table.evaluator()
    with pytest.raises(ValueError, match="data module must provide example_ids"):
        evaluator.update({"inputs": torch.zeros(2, 900)}, torch.zeros(2, 900, dtype=torch.long), torch.zeros(2))
    with pytest.raises(ValueError, match=r"predictions must be tokens \[B, 900\]"):
        evaluator.update({"example_ids": torch.arange(2)}, torch.zeros(2, 81, dtype=torch.long), torch.zeros(2))
    evaluator.update({"example_ids": torch.tensor([7])}, torch.zeros(1, 900, dtype=torch.long), torch.zeros(1))
    with pytest.raises(ValueError, match="example id 7 is out of range"):
        evaluator.compute()
    with pytest.raises(ValueError, match="name a task or test input"):
        ARCEvaluator(["a"], [[A]], np.array([0]), np.array([1]), ar.IDENTITY[None])


# ----------------------------------------------------------------------------------------------------------------
# DDP: two gloo processes, each with half of the examples (the second padded with a repeat, as samplers do)


def ddp_votes(table: Table) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """Mixed right and wrong votes with random halt logits, the same in every process."""
    rng = np.random.default_rng(3)
    right = all_right(table)
    choices = [WRONG, OTHER]
    votes = {e: right[e] if rng.random() < 0.5 else choices[int(rng.integers(2))] for e in right}
    return votes, {e: float(rng.normal()) for e in votes}


def ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "localhost", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        table = make_table(copies=5)
        votes, logits = ddp_votes(table)
        ids = list(votes)
        mine = ids[rank::world] + (ids[:1] if rank == world - 1 else [])
        evaluator = table.evaluator(ks=KS)
        feed(evaluator, table, {e: votes[e] for e in mine}, logits)
        result = scores(evaluator)
        path = evaluator.write(Path(out), f"rank{rank}")
        torch.save({"scores": result, "submission": json.loads(path.read_text())}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_ddp_matches_single_process(tmp_path: Path) -> None:
    table = make_table(copies=5)
    votes, logits = ddp_votes(table)
    evaluator = table.evaluator(ks=KS)
    feed(evaluator, table, votes, logits)
    expected = scores(evaluator)
    expected_submission = json.loads(evaluator.write(tmp_path, "single").read_text())
    assert 0.0 < expected["pass@1"] < expected["pass@5"] <= 1.0  # a mixed case, not a trivial one

    mp.spawn(ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["scores"] == expected
        assert got["submission"] == expected_submission
