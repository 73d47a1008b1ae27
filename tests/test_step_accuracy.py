"""Per-step exact accuracy of plain evaluation: the accuracy had every example stopped after step s, by hand."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from recursive_reasoning.core.losses import IGNORE_LABEL_ID, sequence_loss
from recursive_reasoning.core.network import NetworkConfig
from recursive_reasoning.module import RecursiveReasoner
from strategies import RSM, TRM, Progress, RecursionStrategy

VOCAB, LENGTH, STEPS = 4, 4, 3


def tiny_model(strategy: RecursionStrategy) -> RecursiveReasoner:
    torch.manual_seed(0)
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0)
    return RecursiveReasoner(strategy, network, vocab_size=VOCAB, seq_len=LENGTH).eval()


def answers_by_hand(model: RecursiveReasoner, inputs: Tensor) -> list[Tensor]:
    """The answer logits after each step, unrolled here: segments (TRM) or outer steps (RSM) from the initial states."""
    net, strategy = model.net, model.strategy
    batch = {"inputs": inputs, "labels": inputs, "puzzle_ids": torch.zeros(len(inputs), dtype=torch.long)}
    with torch.no_grad():
        if isinstance(strategy, RSM):
            x = net.embed(batch["inputs"], batch["puzzle_ids"])
            y, z = net.initial_states(len(inputs))
            found = []
            for _ in range(STEPS):
                y, z = strategy.cycle(net, y, z, x, 1)
                found.append(net.decode(y))
            return found
        carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
        found = []
        for _ in range(STEPS):
            out = strategy.run_segment(net, carry, Progress(0), training=False)
            carry = strategy.advance(carry, out, training=False)
            found.append(out.logits)
        return found


def labelled_batch(model: RecursiveReasoner, seed: int) -> tuple[dict[str, Tensor], list[Tensor]]:
    """A batch of 6 whose labels are some step's own answer for some rows (so accuracy changes with the step), one
    row without any label; returns it with the logits after every step."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(1, VOCAB, (6, LENGTH), generator=g)
    logits = answers_by_hand(model, inputs)
    labels = torch.randint(0, VOCAB, (6, LENGTH), generator=g)
    labels[0] = logits[0][0].argmax(-1)  # right after step 1
    labels[1] = logits[1][1].argmax(-1)  # right after step 2
    labels[2] = logits[2][2].argmax(-1)  # right after step 3
    labels[3] = logits[2][3].argmax(-1)
    labels[3, 0] = IGNORE_LABEL_ID  # an ignored position does not count against a row
    labels[5] = IGNORE_LABEL_ID  # no label at all: left out
    return {"inputs": inputs, "labels": labels, "puzzle_ids": torch.zeros(6, dtype=torch.long)}, logits


def expected_accuracy(batches: list[tuple[dict[str, Tensor], list[Tensor]]]) -> list[float]:
    """Exact matches after each step over the labelled rows of every batch, divided by their number."""
    exact, rows = [0.0] * STEPS, 0
    for batch, logits in batches:
        labelled = (batch["labels"] != IGNORE_LABEL_ID).any(-1)
        rows += int(labelled.sum())
        for s in range(STEPS):
            exact[s] += float((sequence_loss(logits[s], batch["labels"])[1] & labelled).sum())
    return [e / rows for e in exact]


def validate(model: RecursiveReasoner, batches: list[dict[str, Tensor]], tmp_path: Path) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    (logged,) = trainer.validate(model, DataLoader(batches, batch_size=None), verbose=False)
    return logged


@pytest.mark.parametrize("strategy", [TRM(cycles=1, latent_steps=1, supervision_steps=STEPS),
                                      RSM(h_schedule=[(0.0, 2)], l_schedule=[(0.0, 1)], h_test=STEPS)],
                         ids=["TRM", "RSM"])
def test_accuracy_after_every_step_matches_a_hand_computation(strategy: RecursionStrategy, tmp_path: Path) -> None:
    model = tiny_model(strategy)
    batches = [labelled_batch(model, seed) for seed in (0, 1)]
    expected = expected_accuracy(batches)
    assert len(set(expected)) > 1, "the labels make the accuracy change with the step"
    logged = validate(model, [b for b, _ in batches], tmp_path)
    assert model.exact_accuracy_by_step("val") == pytest.approx(expected, abs=1e-6)
    for s, value in enumerate(expected, start=1):
        assert logged[f"val/exact_accuracy@step{s}"] == pytest.approx(value, abs=1e-6)
    assert logged["val/exact_accuracy"] == pytest.approx(expected[-1], abs=1e-6), "no early exit: the last step"

    later = [labelled_batch(model, 2)]  # the next epoch starts afresh
    validate(model, [b for b, _ in later], tmp_path)
    assert model.exact_accuracy_by_step("val") == pytest.approx(expected_accuracy(later), abs=1e-6)
    assert model.exact_accuracy_by_step("test") == []


def test_early_exit_records_only_the_steps_a_batch_ran(tmp_path: Path) -> None:
    """Every example halts at step 1 (q_halt > 0), so the loop stops there: later steps have no rows (NaN)."""
    model = tiny_model(TRM(cycles=1, latent_steps=1, supervision_steps=STEPS, eval_early_exit=True))
    with torch.no_grad():
        model.net.q_head.weight.zero_()
        model.net.q_head.bias.fill_(5.0)
    batch, logits = labelled_batch(model, 0)
    validate(model, [batch], tmp_path)
    first, *rest = model.exact_accuracy_by_step("val")
    assert first == pytest.approx(expected_accuracy([(batch, logits)])[0], abs=1e-6)
    assert len(rest) == STEPS - 1 and all(math.isnan(v) for v in rest)
