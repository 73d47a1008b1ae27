"""The LightningModule's loops: the two supervision schedules, checkpointed progress, halted slots in the loss."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import GeneratedSudoku
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from strategies import CGAR, TRM, Progress

NETWORK = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0)


def tiny_data(tmp_path: Path, batch_size: int = 8) -> GeneratedSudoku:
    return GeneratedSudoku(size=4, givens=8, train_size=64, val_size=8, test_size=8, batch_size=batch_size,
                           cache_dir=str(tmp_path / "cache"))


def tiny_trainer(tmp_path: Path, max_steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                     default_root_dir=tmp_path, **kwargs)


class CountBatches(L.Callback):
    def __init__(self) -> None:
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches += 1


@pytest.mark.parametrize(("halt_bias", "batches"), [(-5.0, 2), (5.0, 6)])
def test_batch_schedule_steps_the_optimiser_after_every_segment(tmp_path: Path, halt_bias: float, batches: int) -> None:
    torch.manual_seed(0)
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=3, halt_exploration=0.0), NETWORK,
                              OptimConfig(lr=0.0, warmup_steps=0), vocab_size=6, seq_len=16,
                              supervision_schedule="batch")
    with torch.no_grad():
        model.net.q_head.bias.fill_(halt_bias)  # lr 0 keeps it: -5 never halts early, +5 halts after one segment
    counter = CountBatches()
    trainer = tiny_trainer(tmp_path, max_steps=6, enable_checkpointing=False, callbacks=[counter])
    trainer.fit(model, tiny_data(tmp_path))
    assert trainer.global_step == 6
    assert counter.batches == batches  # 3 segments (optimiser steps) per batch, or 1 when every slot halts at once


def test_halted_slots_are_dropped_from_the_loss() -> None:
    torch.manual_seed(0)
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=2), NETWORK, vocab_size=6, seq_len=16)
    strategy, net = model.strategy, model.net
    batch = {"inputs": torch.randint(1, 6, (4, 16)), "labels": torch.randint(2, 6, (4, 16)),
             "puzzle_ids": torch.zeros(4, dtype=torch.long)}
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    out = strategy.run_segment(net, carry, Progress(0), training=False)
    mask = torch.tensor([True, False, True, False])
    masked = strategy.loss(net, carry, out, Progress(0), slot_mask=mask).total
    sub = {k: v[mask] for k, v in batch.items()}
    sub_carry = strategy.refresh(net, strategy.initial_carry(net, sub), sub)
    sub_out = strategy.run_segment(net, sub_carry, Progress(0), training=False)
    assert torch.allclose(masked, strategy.loss(net, sub_carry, sub_out, Progress(0)).total, atol=1e-5)


def test_evaluation_on_a_checkpoint_uses_the_progress_it_reached(tmp_path: Path) -> None:
    torch.manual_seed(0)
    strategy = CGAR(cycles=3, latent_steps=3, supervision_steps=2, eval_full_depth=False,
                    stage_depths=[(1, 1), (2, 2), (3, 3)])
    model = RecursiveReasoner(strategy, NETWORK, OptimConfig(warmup_steps=0), vocab_size=6, seq_len=16)
    trainer = tiny_trainer(tmp_path, max_steps=4)
    trainer.fit(model, tiny_data(tmp_path))
    checkpoint = next(tmp_path.rglob("*.ckpt"))

    seen: list[tuple[Progress, tuple[int, int]]] = []

    class Probe(L.Callback):
        def on_test_start(self, trainer, pl_module) -> None:
            progress = pl_module.progress()
            seen.append((progress, pl_module.strategy.depth(progress, False)))

    fresh = RecursiveReasoner(CGAR(cycles=3, latent_steps=3, supervision_steps=2, eval_full_depth=False,
                                   stage_depths=[(1, 1), (2, 2), (3, 3)]), NETWORK, vocab_size=6, seq_len=16)
    tester = tiny_trainer(tmp_path / "test", max_steps=1000, callbacks=[Probe()])
    tester.test(fresh, tiny_data(tmp_path), ckpt_path=checkpoint, verbose=False)
    progress, depth = seen[0]
    assert (progress.step, progress.total) == (4, 4), "the checkpoint's progress, not step 0 of a new trainer"
    assert depth == (3, 3), "the depth the curriculum reached, not the first stage's"


def test_resume_continues_the_schedule(tmp_path: Path) -> None:
    torch.manual_seed(0)
    make = lambda: RecursiveReasoner(  # noqa: E731
        CGAR(cycles=2, latent_steps=2, supervision_steps=2, stage_depths=[(1, 1), (1, 2), (2, 2)]), NETWORK,
        OptimConfig(warmup_steps=0), vocab_size=6, seq_len=16)
    first = tiny_trainer(tmp_path / "a", max_steps=3)
    first.fit(make(), tiny_data(tmp_path))
    checkpoint = next((tmp_path / "a").rglob("*.ckpt"))
    steps: list[int] = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            steps.append(pl_module.progress().step)

    resumed = tiny_trainer(tmp_path / "b", max_steps=6, callbacks=[Probe()])
    resumed.fit(make(), tiny_data(tmp_path), ckpt_path=checkpoint)
    assert steps == [3, 4, 5]


def test_unknown_schedule_is_rejected() -> None:
    with pytest.raises(ValueError, match="supervision_schedule"):
        RecursiveReasoner(TRM(), NETWORK, supervision_schedule="segments")


def test_puzzle_table_at_arc_scale_gets_a_sparse_gradient_and_sparse_update() -> None:
    """About 1M ids: one training step gives the table a gradient of the batch's rows only, and SignSGD moves only
    those rows (no dense gradient or update over the whole table)."""
    ids = 1_000_000
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=1)
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=2), network,
                              OptimConfig(warmup_steps=0, puzzle_emb_lr=0.5), vocab_size=6, seq_len=9,
                              num_puzzle_ids=ids)
    table = model.net.puzzle_embedding.weight
    batch = {"inputs": torch.randint(1, 6, (4, 9)), "labels": torch.randint(1, 6, (4, 9)),
             "puzzle_ids": torch.tensor([3, 999_999, 3, 500_000])}
    carry = model.strategy.refresh(model.net, model.strategy.initial_carry(model.net, batch), batch)
    out = model.strategy.run_segment(model.net, carry, Progress(0, 10), training=True)
    model.strategy.loss(model.net, carry, out, Progress(0, 10)).total.backward()
    assert table.grad.is_sparse
    assert sorted(table.grad.coalesce().indices()[0].tolist()) == [3, 500_000, 999_999]
    optimizer = model.configure_optimizers()["optimizer"]
    before = table.detach().clone()
    optimizer.step()
    moved = (table.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert moved == [3, 500_000, 999_999]


def test_metrics_count_only_rows_with_a_label(tmp_path: Path) -> None:
    """A padding row (no valid label) counts as exactly right by the loss's rule; the metrics leave it out in training
    and in evaluation, as both reference codes do, instead of averaging it in."""
    torch.manual_seed(0)
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=2, halt_exploration=0.0), NETWORK,
                              OptimConfig(lr=0.0, warmup_steps=0), vocab_size=6, seq_len=16)
    with torch.no_grad():
        model.net.q_head.bias.fill_(5.0)  # every slot halts after its first training segment: q_halt > 0
    batch = {"inputs": torch.randint(1, 6, (4, 16)), "labels": torch.randint(2, 6, (4, 16)),
             "puzzle_ids": torch.zeros(4, dtype=torch.long)}
    batch["labels"][2:] = -100
    loader = torch.utils.data.DataLoader([batch], batch_size=None)
    trainer = tiny_trainer(tmp_path, max_steps=1, enable_checkpointing=False)
    trainer.fit(model, loader)

    def expected(preds: torch.Tensor) -> dict[str, float]:
        correct = preds[:2] == batch["labels"][:2]
        exact = correct.all(-1).float().mean().item()
        return {"accuracy": correct.float().mean(-1).mean().item(), "exact_accuracy": exact}

    logged = trainer.callback_metrics
    assert logged["train/finished"].item() == 2, "the two halted padding rows are not counted"
    train = expected(model.last_segment.logits.argmax(-1))
    assert train["exact_accuracy"] < 1, "the labelled rows are wrong, so counting a padding row would show"
    for name, value in train.items():
        assert logged[f"train/{name}"].item() == pytest.approx(value, abs=1e-6), name
    assert logged["train/q_halt_accuracy"].item() == pytest.approx(train["exact_accuracy"], abs=1e-6)  # q_halt > 0

    evaluator = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                          default_root_dir=tmp_path / "val")
    (val,) = evaluator.validate(model, loader, verbose=False)
    evaluation = expected(model.solve(batch)["logits"].argmax(-1))
    for name, value in evaluation.items():
        assert val[f"val/{name}"] == pytest.approx(value, abs=1e-6), name
