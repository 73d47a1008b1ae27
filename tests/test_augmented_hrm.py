"""Augmented HRM's evaluation protocol: the reference perturbations (Sudoku cyclic digit shifts, maze start/goal
swap), the strategy's own halting rule as confidence and early exit, the per-checkpoint strict-majority oracle, and
`rr test`-style evaluation of a checkpoint ensemble reporting it beside the label-free vote."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from datamodules import GeneratedSudoku, maze_rules, sudoku_rules
from datamodules.kinds import ARCKind, MazeKind, SudokuKind
from recursive_reasoning.callbacks import LateCheckpoints, late_checkpoints
from recursive_reasoning.inference import (
    TestTimeOptions,
    oracle_majority,
    solve_ensemble,
    solve_with_options,
    trajectories,
)
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from recursive_reasoning.solve import load_ensemble
from strategies import HRM, TRM, Progress


def _votes(*puzzles: tuple[str, str, str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, confident) [M=2, N=3, B] from, per puzzle, checkpoint 0's correct and confident passes and then
    checkpoint 1's, one character per pass ('1' true)."""
    bits = torch.tensor([[[c == "1" for c in passes] for passes in puzzle] for puzzle in puzzles])  # [B, 4, N]
    return bits[:, 0::2].permute(1, 2, 0), bits[:, 1::2].permute(1, 2, 0)


def test_oracle_is_a_strict_majority_of_confident_passes_per_checkpoint_then_any_checkpoint() -> None:
    correct, confident = _votes(
        ("110", "111", "000", "000"),  # checkpoint 0: 2 of its 3 confident passes are right
        ("100", "110", "111", "000"),  # a tie (1 of 2), and all right but none confident: not solved
        ("000", "000", "100", "100"),  # only checkpoint 1, with 1 of 1: solved (OR over checkpoints)
        ("111", "000", "111", "000"),  # always right, never confident: not solved
        ("100", "100", "000", "111"),  # 1 of 1, then 0 of 3: solved (pooled, 1 of 4 would not be)
        ("000", "111", "100", "111"),  # 0 of 3, then 1 of 3: not solved
        ("011", "100", "011", "100"),  # the right passes are not the confident ones: not solved
    )
    assert oracle_majority(correct, confident).tolist() == [True, False, True, False, True, False, False]
    with pytest.raises(ValueError, match=r"\[checkpoints, passes, puzzles\]"):
        oracle_majority(correct[0], confident[0])


def _tiny(strategy, q_halt: float, q_continue: float) -> ReasoningNetwork:
    """A tiny network whose Q head always answers (q_halt, q_continue)."""
    torch.manual_seed(0)
    config = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0,
                           shared=not isinstance(strategy, HRM))
    net = ReasoningNetwork(config, 6, 16).eval()
    heads = torch.tensor([q_halt, q_continue])
    net.halt_logits = lambda y: heads.expand(y.shape[0], 2)  # type: ignore[method-assign]
    return net


@pytest.mark.parametrize("strategy,confident", [(HRM(cycles=1, latent_steps=1, supervision_steps=4), False),
                                                (TRM(cycles=1, latent_steps=1, supervision_steps=4), True)],
                         ids=["HRM", "TRM"])
def test_the_strategys_own_halting_rule_is_confidence_and_early_exit(strategy, confident: bool) -> None:
    net = _tiny(strategy, q_halt=1.0, q_continue=2.0)  # q_halt > 0 but q_halt < q_continue: only TRM halts
    fmt = SudokuKind(4)
    batch = {"inputs": torch.from_numpy(np.stack([fmt.parse("12..34..........")[0].inputs] * 3)),
             "puzzle_ids": torch.zeros(3, dtype=torch.long)}
    options = TestTimeOptions(copies=4, perturbations="reference")
    found = trajectories(net, strategy, batch, Progress(0), options, fmt)
    assert found.confident is not None and found.confident.shape == (4, 3)
    assert bool(found.confident.all()) is confident and bool(found.confident.any()) is confident
    halted = solve_with_options(net, strategy, batch, Progress(0), TestTimeOptions(early_exit="halt"), fmt)
    assert halted.steps.tolist() == ([1.0] * 3 if confident else [4.0] * 3)
    voted = solve_with_options(net, strategy, batch, Progress(0), TestTimeOptions(selection="confident_vote"), fmt)
    assert voted.confident is not None and bool(voted.confident.all()) is confident
    correct = torch.ones_like(voted.confident)
    assert oracle_majority(correct, voted.confident).tolist() == [confident] * 3


@pytest.mark.parametrize("size", [4, 9])
def test_cyclic_digit_shifts_keep_a_valid_sudoku_valid_and_invert(size: int) -> None:
    puzzles, solutions = sudoku_rules.generate(size, 3, seed=2)
    fmt, ids = SudokuKind(size), np.zeros(3, dtype=np.int64)
    moved, moved_ids, inverse = fmt.reference_perturbations(puzzles + 1, ids, size)
    moved_solutions, _, _ = fmt.reference_perturbations(solutions + 1, ids, size)
    assert moved.shape == (size, 3, size * size) and moved_ids.shape == (size, 3)
    np.testing.assert_array_equal(moved[0], puzzles + 1)
    for k in range(size):
        assert fmt.check(moved[k], moved_solutions[k]).all(), f"shift {k} broke a solution"
        expected = np.where(puzzles > 0, (puzzles - 1 + k) % size + 1, 0)  # digit d -> (d - 1 + k) mod N + 1
        np.testing.assert_array_equal(moved[k] - 1, expected)
        assert len({tuple(moved_solutions[k][0])} | {tuple(moved_solutions[j][0]) for j in range(k)}) == k + 1
    np.testing.assert_array_equal(inverse(moved_solutions), np.broadcast_to(solutions + 1, moved_solutions.shape))
    with pytest.raises(ValueError, match=f"has {size} cyclic digit shifts"):
        fmt.reference_perturbations(puzzles + 1, ids, size + 1)


def test_maze_start_goal_swap_keeps_the_path_and_inverts() -> None:
    questions, answers = maze_rules.generate(6, 2, min_path=4, seed=0)
    fmt, ids = MazeKind(6), np.zeros(2, dtype=np.int64)
    questions, answers = questions.astype(np.int64), answers.astype(np.int64)
    moved, _, inverse = fmt.reference_perturbations(questions, ids, 2)
    moved_answers, _, _ = fmt.reference_perturbations(answers, ids, 2)
    np.testing.assert_array_equal(moved[0], questions)
    np.testing.assert_array_equal(moved[1] == maze_rules.START, questions == maze_rules.GOAL)
    np.testing.assert_array_equal(moved[1] == maze_rules.GOAL, questions == maze_rules.START)
    assert fmt.check(moved[1], moved_answers[1]).all()
    np.testing.assert_array_equal(inverse(moved_answers), np.stack([answers, answers]))
    with pytest.raises(ValueError, match="2 reference perturbations"):
        fmt.reference_perturbations(questions, ids, 3)
    with pytest.raises(ValueError, match="no reference perturbation set"):
        ARCKind().reference_perturbations(questions, ids, 2)
    with pytest.raises(ValueError, match="unknown perturbations"):
        TestTimeOptions(perturbations="shifts")  # type: ignore[arg-type]


def test_a_checkpoint_ensemble_reports_the_oracle_beside_the_vote(tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = GeneratedSudoku(size=4, train_size=32, val_size=4, test_size=8, batch_size=8, cache_dir=str(tmp_path))
    strategy = HRM(cycles=1, latent_steps=1, supervision_steps=2)
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, answer_layers=1, shared=False,
                            puzzle_emb_len=0)
    model = RecursiveReasoner(strategy, network, OptimConfig(lr=1e-3, warmup_steps=0), vocab_size=6, seq_len=16)
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
                        callbacks=[LateCheckpoints(every_n_steps=1, last_fraction=0.7, dirpath=str(tmp_path / "late"))])
    trainer.fit(model, datamodule=data)
    kept = late_checkpoints(tmp_path / "late")
    assert [p.name for p in kept] == ["late-step1.ckpt", "late-step2.ckpt", "late-step3.ckpt"]

    options = TestTimeOptions(copies=4, perturbations="reference")
    tester = RecursiveReasoner(strategy, network, vocab_size=6, seq_len=16, test_time=options,
                               ensemble=[str(tmp_path / "late")])
    test_trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                             enable_checkpointing=False, default_root_dir=tmp_path)
    metrics = test_trainer.test(tester, datamodule=data, ckpt_path=str(kept[-1]), verbose=False)[0]
    assert {"test/exact_accuracy", "test/oracle_majority_exact"} <= set(metrics)
    # the ckpt_path is not counted twice: 3 checkpoints x 4 shifts x 2 segments per puzzle
    assert metrics["test/steps_run_per_puzzle"] == pytest.approx(3 * 4 * 2)

    members, fmt = load_ensemble([str(kept[-1]), str(kept[0]), str(kept[1])])
    batch = next(iter(data.test_dataloader()))
    assert len(batch["inputs"]) == 8, "the whole test set in one batch"
    solution = solve_ensemble([(m.net, m.strategy, m.progress()) for m in members], batch, options, fmt)
    assert solution.confident is not None and solution.confident.shape == (3, 4, 8)
    correct = (solution.answers == batch["labels"]).all(-1)
    assert metrics["test/oracle_majority_exact"] == pytest.approx(oracle_majority(correct, solution.confident)
                                                                 .float().mean().item())
    vote = (solution.predictions == batch["labels"]).all(-1).float().mean().item()
    assert metrics["test/exact_accuracy"] == pytest.approx(vote)
