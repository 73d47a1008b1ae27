"""Test-time compute: exit rules, answer selection, the formats' symmetries and their inverses, latent noise, and
`solve_with_options` on every strategy."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from conftest import require_shared

from datamodules import arc_rules
from datamodules.kinds import ARCKind, MazeKind, SudokuKind
from recursive_reasoning.inference import LatentNoise, TestTimeOptions, exit_steps, select, solve_with_options
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import CGAR, HRM, RSM, TRM, Progress


def _answers(*steps: list[list[int]]) -> torch.Tensor:
    return torch.tensor(steps)  # [S, N, L]


def test_exit_steps_for_each_rule() -> None:
    answers = _answers([[1, 1], [5, 5]], [[1, 2], [5, 5]], [[1, 2], [5, 5]], [[1, 2], [6, 5]])  # [4, 2, 2]
    halts = torch.tensor([[False, False], [True, False], [True, False], [True, False]])  # the strategy's decisions
    assert exit_steps(answers, halts, "none", 2).tolist() == [3, 3]
    assert exit_steps(answers, halts, "halt", 2).tolist() == [1, 3]  # never halting: the last step
    assert exit_steps(answers, None, "settled", 1).tolist() == [2, 1]
    assert exit_steps(answers, None, "settled", 2).tolist() == [3, 2]
    with pytest.raises(ValueError, match="needs a strategy with a Q head"):
        exit_steps(answers, None, "halt", 2)


def test_select_votes_then_breaks_ties_by_score_then_order() -> None:
    a, b, c = [1, 1], [2, 2], [3, 3]
    candidates = torch.tensor([[a, a], [b, b], [a, c], [b, c]])  # [N=4, B=2, L=2]
    scores = torch.tensor([[0.2, 0.9], [0.9, 0.1], [0.2, 0.5], [0.9, 0.5]])
    winner, agreement, score = select(candidates, scores)
    # puzzle 0: a and b have 2 votes each, b's mean score is higher; puzzle 1: c has 2 votes.
    assert winner.tolist() == [b, c]
    assert agreement.tolist() == [0.5, 0.5]
    assert score.tolist() == pytest.approx([0.9, 0.5])
    equal_scores = torch.full((4, 2), 0.5)
    assert select(candidates, equal_scores)[0].tolist() == [a, c]  # full tie: the first candidate's group
    eligible = torch.tensor([[True, False], [False, False], [True, False], [False, False]])
    winner, agreement, _ = select(candidates, scores, eligible)
    assert winner.tolist() == [a, c]  # puzzle 1 has nobody eligible: everyone votes
    assert agreement.tolist() == [1.0, 0.5]


def test_options_are_validated_and_labelled() -> None:
    assert TestTimeOptions().label() == "single pass" and TestTimeOptions().is_plain
    assert TestTimeOptions(copies=8, selection="checker").label() == "copies=8 selection=checker"
    for bad in ({"steps": 0}, {"copies": 0}, {"noise": -1.0}, {"early_exit": "soon"}, {"selection": "best"}):
        with pytest.raises(ValueError):
            TestTimeOptions(**bad)


@pytest.mark.parametrize("size", [4, 6, 9])
def test_sudoku_symmetries_keep_validity_and_invert(size: int) -> None:
    from datamodules.sudoku_rules import generate

    puzzles, solutions = generate(size, 3, seed=1)
    fmt = SudokuKind(size)
    moved, ids, inverse = fmt.transforms(puzzles + 1, np.zeros(3, dtype=np.int64), 6, np.random.default_rng(0))
    assert moved.shape == (6, 3, size * size) and ids.shape == (6, 3)
    np.testing.assert_array_equal(moved[0], puzzles + 1)
    moved_solutions, _, _ = fmt.transforms(solutions + 1, np.zeros(3, dtype=np.int64), 6, np.random.default_rng(0))
    for p in range(6):  # the same transform maps a puzzle's solution to a solution of the moved puzzle
        assert fmt.check(moved[p], moved_solutions[p]).all()
    np.testing.assert_array_equal(inverse(moved_solutions), np.broadcast_to(solutions + 1, moved_solutions.shape))


def test_maze_dihedral_copies_invert() -> None:
    line = gzip.open(require_shared("data/maze-30x30-hard-1k/test.csv.gz"), "rt").read().splitlines()[1].split(",")
    fmt = MazeKind(30)
    maze = fmt.parse(line[1])[0].inputs
    answer = MazeKind(30).parse(line[1])[0].inputs.copy()
    answer[:] = np.frombuffer(line[2].encode(), dtype=np.uint8)
    answer = np.select([answer == ord(ch) for ch in "# SGo"], [1, 2, 3, 4, 5])
    moved, _, inverse = fmt.transforms(np.stack([maze, maze]), np.zeros(2, dtype=np.int64), 8, None)
    moved_answers, _, _ = fmt.transforms(np.stack([answer, answer]), np.zeros(2, dtype=np.int64), 8, None)
    for p in range(8):
        assert fmt.check(moved[p], moved_answers[p]).all()
    np.testing.assert_array_equal(inverse(moved_answers)[:, 0], np.broadcast_to(answer, (8, 900)))
    with pytest.raises(ValueError, match="already marks path cells"):
        fmt.parse(line[2])


def test_arc_copies_map_back_to_the_original_frame() -> None:
    with gzip.open(require_shared("data/arc-agi-1/evaluation.json.gz"), "rt") as f:
        task = json.load(f)["00576224"]
    fmt = ARCKind()
    puzzles = fmt.parse(json.dumps(task), name="00576224")
    assert len(puzzles) == 1 and puzzles[0].labels is not None
    inputs = np.stack([p.inputs for p in puzzles])
    moved, ids, inverse = fmt.transforms(inputs, np.zeros(1, dtype=np.int64), 5, np.random.default_rng(0))
    assert (ids == 0).all()
    np.testing.assert_array_equal(moved[0], inputs)
    np.testing.assert_array_equal(inverse(moved), np.broadcast_to(inputs, moved.shape))
    assert fmt.text(inputs[0], puzzles[0].labels).splitlines()[0] == "".join(map(str, task["test"][0]["output"][0]))
    assert arc_rules.crop(puzzles[0].labels).shape == (6, 6)


def _tiny(strategy, vocab: int = 6, length: int = 16) -> ReasoningNetwork:
    torch.manual_seed(0)
    config = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0,
                           shared=not isinstance(strategy, HRM))
    return ReasoningNetwork(config, vocab, length).eval()


def test_latent_noise_changes_the_trajectory_reproducibly() -> None:
    net = _tiny(TRM())
    z, y, x = torch.randn(3, 2, 16, 16).unbind(0)
    plain = net.latent_step(z, y, x)
    noisy = LatentNoise(net, 0.3, torch.Generator().manual_seed(1)).latent_step(z, y, x)
    again = LatentNoise(net, 0.3, torch.Generator().manual_seed(1)).latent_step(z, y, x)
    assert torch.equal(noisy, again) and not torch.allclose(noisy, plain)
    assert (noisy - plain).std().item() == pytest.approx(0.3, rel=0.2)


@pytest.mark.parametrize(
    "strategy",
    [TRM(cycles=1, latent_steps=1, supervision_steps=3), HRM(cycles=1, latent_steps=1, supervision_steps=3),
     CGAR(cycles=1, latent_steps=2, supervision_steps=3), RSM(h_test=3, l_test=1)],
    ids=["TRM", "HRM", "CGAR", "RSM"],
)
def test_every_strategy_runs_every_option(strategy) -> None:
    net = _tiny(strategy)
    fmt = SudokuKind(4)
    inputs = torch.from_numpy(np.stack([fmt.parse("12..34..........")[0].inputs] * 2))
    batch = {"inputs": inputs, "puzzle_ids": torch.zeros(2, dtype=torch.long)}
    plain = solve_with_options(net, strategy, batch, Progress(0), TestTimeOptions(), fmt)
    assert plain.predictions.shape == (2, 16) and plain.trace[0].shape == (3, 2, 16)
    assert plain.steps.tolist() == [3.0, 3.0] and plain.steps_run == 6
    deeper = solve_with_options(net, strategy, batch, Progress(0), TestTimeOptions(steps=6), fmt)
    assert deeper.trace[0].shape[0] == 6 and torch.equal(deeper.trace[0][:3], plain.trace[0])
    voted = solve_with_options(net, strategy, batch, Progress(0),
                               TestTimeOptions(copies=3, samples=2, noise=0.2, selection="checker"), fmt)
    assert voted.steps_run == 3 * 3 * 2 * 2 and voted.passes_checker is not None
    settled = solve_with_options(net, strategy, batch, Progress(0),
                                 TestTimeOptions(steps=8, early_exit="settled", settle_k=1), fmt)
    assert (settled.steps <= 8).all() and settled.steps_run == int(settled.steps.sum())
    if strategy.has_halt_head:
        assert not torch.isnan(plain.confidence).any()
        solve_with_options(net, strategy, batch, Progress(0), TestTimeOptions(early_exit="halt", selection="max_q"))
    else:
        assert torch.isnan(plain.confidence).all()
        with pytest.raises(ValueError, match="needs a Q head"):
            solve_with_options(net, strategy, batch, Progress(0), TestTimeOptions(selection="max_q"))


def test_maze_files_hold_mazes_as_lines_or_rows(tmp_path) -> None:
    from datamodules import maze_rules

    q, _ = maze_rules.generate(6, 2, min_path=4, seed=0)
    fmt = MazeKind(6)
    text = maze_rules.format_maze(q[0], lines=True) + "\n\n" + maze_rules.format_maze(q[1]) + "\n"
    (tmp_path / "mazes.txt").write_text(text)
    puzzles = fmt.read_file(tmp_path / "mazes.txt")
    assert [p.inputs.tolist() for p in puzzles] == [q[0].tolist(), q[1].tolist()]
    (tmp_path / "bad.txt").write_text(maze_rules.format_maze(q[0], lines=True).replace("S", " ") + "\n")
    with pytest.raises(ValueError, match="maze 0: maze must have exactly one start S"):
        fmt.read_file(tmp_path / "bad.txt")
