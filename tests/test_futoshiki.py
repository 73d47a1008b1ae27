"""Futoshiki, the plug-in puzzle kind: encoding, text, rules, symmetries, solver and generator, the generic
generated data module, and `rr solve` (trace and voting) on a tiny model trained a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from datamodules import GeneratedPuzzles
from datamodules.kinds import FutoshikiKind, kind_from_description
from datamodules.kinds.conformance import check_datamodule, check_kind
from recursive_reasoning.core.network import NetworkConfig
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.solve import load_solver
from strategies import TRM
from test_solve import run as solve

# A 4x4 puzzle with one solution (the class docstring's example) and that solution.
PUZZLE = "3-.-.-./-+v+-+-/.-.-.-./-+-+-+-/.-2-.-./-+-+-+^/.-.-.>."
SOLUTION = "3-4-1-2/-+v+-+-/1-3-2-4/-+-+-+-/4-2-3-1/-+-+-+^/2-1-4>3"


def tokens(kind: FutoshikiKind, text: str) -> np.ndarray:
    return kind.parse(text)[0].inputs


def test_encoding_layout_and_shape() -> None:
    kind = FutoshikiKind(4)
    assert (kind.seq_len, kind.vocab_size) == (49, 10)
    grid = tokens(kind, PUZZLE).reshape(7, 7)
    assert grid[0, 0] == 4 and grid[0, 2] == 1  # the given 3, a blank
    assert grid[1, 2] == kind.tokens["gt"] and grid[1, 0] == kind.tokens["none"]  # 'v': the top cell is larger
    assert grid[6, 5] == kind.tokens["gt"] and grid[5, 6] == kind.tokens["lt"]  # '>' and '^'
    assert (grid[1::2, 1::2] == kind.tokens["fill"]).all() and (grid > 0).all()
    assert FutoshikiKind.from_shape(81, 11).size == 5
    with pytest.raises(ValueError, match="no Futoshiki"):
        FutoshikiKind.from_shape(81, 12)
    assert kind_from_description(FutoshikiKind(5).describe()).size == 5


def test_text_forms_read_back() -> None:
    kind = FutoshikiKind(4)
    puzzle = tokens(kind, PUZZLE)
    assert kind.compact(puzzle) == PUZZLE
    assert (tokens(kind, kind.text(puzzle, puzzle)) == puzzle).all()
    assert kind.text(puzzle, puzzle).splitlines()[:2] == ["3 . . .", "  v"]
    answer = kind.parse_answer(SOLUTION, puzzle)
    assert kind.compact(answer) == SOLUTION
    with pytest.raises(ValueError, match="changes the given"):
        kind.parse_answer(SOLUTION.replace("3", "4", 1), puzzle)
    with pytest.raises(ValueError, match="has 7 rows"):
        kind.parse("3-.-.-./-+v+-+-")
    with pytest.raises(ValueError, match="row 2, column 3: '<' where '\^', 'v' or ' ' \(a column gap\)"):
        kind.parse(PUZZLE.replace("v", "<"))
    with pytest.raises(ValueError, match="break the rules"):
        kind.parse("3-3-.-./-+-+-+-/.-.-.-./-+-+-+-/.-.-.-./-+-+-+-/.-.-.-.")


def test_rule_checker_on_hand_made_answers() -> None:
    kind = FutoshikiKind(4)
    puzzle = tokens(kind, PUZZLE)
    good = kind.parse_answer(SOLUTION, puzzle)
    # a Latin square keeping the givens and every inequality but '^': its 3 sits above a 1
    broken_inequality = kind.parse_answer("3-4-1-2/-/2-1-3-4/-/1-2-4-3/-/4-3-2-1", puzzle)
    repeated = good.copy()
    repeated[2] = good[0]  # a second 3 in the first row
    lost_given = kind.parse_answer("4-3-1-2/-/1-2-3-4/-/3-4-2-1/-/2-1-4-3", tokens(kind, "./-/./-/./-/."))
    checked = kind.check(np.stack([puzzle] * 4), np.stack([good, broken_inequality, repeated, lost_given]))
    assert checked.tolist() == [True, False, False, False]
    cells, gaps = kind._wrong(puzzle, broken_inequality)
    assert gaps.sum() == 1 and not cells.any()


def test_solver_counts_latin_squares_and_unique_puzzles() -> None:
    empty3 = FutoshikiKind(3).parse("./-/./-/.")[0].inputs  # short rows pad with blanks and no clues
    assert FutoshikiKind(3).count_solutions(empty3, limit=100).tolist() == [12]  # the 12 Latin squares of order 3
    kind = FutoshikiKind(4)
    assert kind.count_solutions(tokens(kind, "./-/./-/./-/."), limit=1000).tolist() == [576]
    loose = tokens(kind, PUZZLE.replace("^", "-"))
    assert kind.count_solutions(np.stack([tokens(kind, PUZZLE), loose])).tolist() == [1, 2]


def test_symmetries_reorient_inequalities_by_hand() -> None:
    kind = FutoshikiKind(4)
    row = tokens(kind, "1<2/-/./-/./-/.")  # '<' right of the cell (0, 0)
    flipped_lr = kind.apply_symmetry(row, np.array(8))  # dihedral 4: flip left-right
    assert kind.compact(flipped_lr).split("/")[0] == ".-.-2>1"
    flipped_ud = kind.apply_symmetry(row, np.array(10))  # dihedral 5: flip up-down
    assert kind.compact(flipped_ud).split("/")[-1] == "1<2-.-."
    transposed = kind.compact(kind.apply_symmetry(row, np.array(12))).split("/")  # dihedral 6: transpose
    assert transposed[:3] == ["1-.-.-.", "^+-+-+-", "2-.-.-."]
    reversed_digits = kind.compact(kind.apply_symmetry(row, np.array(1)))  # d -> 5 - d, every sign flipped
    assert reversed_digits.split("/")[0] == "4>3-.-."
    column = tokens(kind, "1/^/2/-/./-/.")
    assert kind.compact(kind.apply_symmetry(column, np.array(12))).split("/")[0] == "1<2-.-."


def test_all_sixteen_symmetries_keep_validity_and_invert() -> None:
    kind = FutoshikiKind(4)
    puzzle, answer = tokens(kind, PUZZLE), kind.parse_answer(SOLUTION, tokens(kind, PUZZLE))
    ids = np.arange(16)
    moved_p = kind.apply_symmetry(np.broadcast_to(puzzle, (16, 49)), ids)
    moved_a = kind.apply_symmetry(np.broadcast_to(answer, (16, 49)), ids)
    assert kind.check(moved_p, moved_a).all() and (kind.count_solutions(moved_p) == 1).all()
    assert len(np.unique(moved_p, axis=0)) == 16
    assert (kind.apply_symmetry(moved_a, kind.inverse_symmetry(ids)) == answer).all()
    inputs, ids_out, inverse = kind.transforms(puzzle[None], np.zeros(1, dtype=np.int64), 8,
                                               np.random.default_rng(0))
    assert inputs.shape == (8, 1, 49) and (inputs[0, 0] == puzzle).all() and ids_out.shape == (8, 1)
    drawn = np.array([int(np.flatnonzero((moved_p == inputs[p, 0]).all(1))[0]) for p in range(8)])  # each copy's id
    assert len(set(drawn.tolist())) == 8, "the copies are distinct symmetries"
    assert (inverse(moved_a[drawn][:, None]) == answer).all(), "each copy's solution maps back to the solution"
    aug_p, aug_a = kind.augment(np.stack([puzzle] * 32), np.stack([answer] * 32), np.random.default_rng(1))
    assert kind.check(aug_p, aug_a).all() and len(np.unique(aug_p, axis=0)) > 4


@pytest.mark.parametrize("size", [4, 5])
def test_passes_the_kind_conformance_checks(size: int) -> None:
    check_kind(FutoshikiKind(size))


@pytest.mark.parametrize("size", [4, 5])
def test_generator_is_seeded_unique_and_minimal(size: int) -> None:
    kind = FutoshikiKind(size)
    inputs, labels = kind.generate(12, np.random.default_rng(7))
    again, _ = kind.generate(12, np.random.default_rng(7))
    other, _ = kind.generate(12, np.random.default_rng(8))
    assert (inputs == again).all() and not (inputs == other).all()
    assert inputs.shape == labels.shape == (12, kind.seq_len) and inputs.min() >= 1
    assert kind.check(inputs, labels).all() and (kind.count_solutions(inputs) == 1).all()
    gaps = kind._layout["gaps"]
    assert (inputs[:, gaps] == labels[:, gaps]).all()
    puzzle = inputs[0]
    clues = np.flatnonzero(((puzzle >= 2) & (puzzle <= size + 1)) | (puzzle == kind.tokens["lt"])
                           | (puzzle == kind.tokens["gt"]))
    dropped = np.stack([puzzle] * len(clues))
    dropped[np.arange(len(clues)), clues] = np.where(np.isin(clues, gaps), kind.tokens["none"], 1)
    assert (kind.count_solutions(dropped) == 2).all(), "no clue can be dropped"


def test_frame_marks_givens_changes_and_mistakes() -> None:
    kind = FutoshikiKind(4)
    puzzle = tokens(kind, PUZZLE)
    answer = kind.parse_answer(SOLUTION, puzzle)
    wrong = answer.copy()
    wrong[2] = answer[0]
    plain = kind.frame(puzzle, answer, None)
    marked = kind.frame(puzzle, wrong, answer)
    assert plain.dtype == np.uint8 and plain.ndim == 3 and plain.shape[2] == 3 and plain.shape == marked.shape
    red = (marked[..., 0] > 200) & (marked[..., 1] < 220) & (marked[..., 2] < 220)
    assert red.sum() > ((plain[..., 0] > 200) & (plain[..., 1] < 220) & (plain[..., 2] < 220)).sum()


def test_generated_puzzles_data_module(tmp_path: Path) -> None:
    kind = FutoshikiKind(4)
    data = GeneratedPuzzles(kind, train_size=40, val_size=6, test_size=10, batch_size=8, cache_dir=str(tmp_path))
    assert (data.vocab_size, data.seq_len, data.num_puzzle_ids, data.puzzle_kind) == (10, 49, 1, kind)
    data.prepare_data()
    assert data.cache_path is not None and data.cache_path.is_file()
    splits = data.load_splits()
    assert [len(splits[s][0]) for s in ("train", "val", "test")] == [40, 6, 10]
    everything = np.concatenate([splits[s][0] for s in ("train", "val", "test")])
    assert len(np.unique(everything, axis=0)) == 56
    data.setup()
    batch = next(iter(data.train_dataloader()))
    assert batch["inputs"].shape == (8, 49) and (batch["puzzle_ids"] == 0).all()
    assert kind.check(batch["inputs"].numpy(), batch["labels"].numpy()).all()
    train = data.datasets["train"]
    first = train.__getitems__(list(range(8)))
    assert torch.equal(first["inputs"], train.__getitems__(list(range(8)))["inputs"])
    plain = first["inputs"].numpy()
    assert not (plain == splits["train"][0][:8]).all(), "training batches are augmented"
    test = next(iter(data.test_dataloader()))
    assert (test["inputs"].numpy() == splits["test"][0][: len(test["inputs"])]).all()
    cached = GeneratedPuzzles(kind, train_size=40, val_size=6, test_size=10, batch_size=8, cache_dir=str(tmp_path))
    assert (cached.load_splits()["test"][1] == splits["test"][1]).all()
    assert data.state_dict()["puzzle_kind"] == kind.describe() and data.hparams["kind"] == kind.describe()
    check_datamodule(data)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny TRM on 4x4 Futoshiki after a few steps, saved by a Trainer with its data module."""
    root = tmp_path_factory.mktemp("futoshiki")
    torch.manual_seed(0)
    data = GeneratedPuzzles(FutoshikiKind(4), train_size=64, val_size=8, test_size=8, batch_size=8,
                            cache_dir=str(root))
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=3),
                              NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0),
                              OptimConfig(lr=1e-3, warmup_steps=0), vocab_size=data.vocab_size, seq_len=data.seq_len)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=root)
    trainer.fit(model, datamodule=data)
    path = root / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_rr_solve_reads_the_kind_from_the_checkpoint_and_writes_a_trace(checkpoint: Path, tmp_path: Path,
                                                                        capsys) -> None:
    _, kind = load_solver(checkpoint)
    assert isinstance(kind, FutoshikiKind) and kind.size == 4
    trace = tmp_path / "trace.png"
    status, out, err = solve(["--ckpt_path", str(checkpoint), "--puzzle", PUZZLE, "--trace", str(trace), "--json"],
                             capsys)
    assert status == 0, err
    item = json.loads(out)
    assert item["input"] == PUZZLE and item["steps"] == 3
    assert [len(row) for row in item["answer"].split("/")] == [7] * 7 and isinstance(item["passes_checker"], bool)
    assert trace.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rr_solve_votes_over_symmetric_copies(checkpoint: Path, capsys) -> None:
    status, out, err = solve(["--ckpt_path", str(checkpoint), "--puzzle", PUZZLE, "--copies", "8", "--json"], capsys)
    assert status == 0, err
    item = json.loads(out)
    assert item["options"].startswith("copies=8")
    assert len(item["answer"]) == len(PUZZLE)
