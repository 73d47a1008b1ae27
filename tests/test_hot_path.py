"""The default training path asks the host for nothing between logging steps: host-device sync points of one `Trainer.fit`
training step, counted by `recursive_reasoning.dispatch_counts` (a count, not a time), and the counter itself."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules import GeneratedSudoku
from recursive_reasoning.callbacks import EMA
from recursive_reasoning.core.network import NetworkConfig
from recursive_reasoning.dispatch_counts import TrainingStepCounter, count_ops
from recursive_reasoning.module import RecursiveReasoner
from recursive_reasoning.optim import OptimConfig
from strategies import TRM

def test_the_counter_sees_a_host_read_a_mask_and_a_scalar_upload() -> None:
    x = torch.randn(6)
    mask = x > 0
    assert count_ops(lambda: x + 1).syncs == 0
    counts = count_ops(lambda: (x.sum().item(), x[mask], bool(mask.any()), x.tolist(), torch.tensor(2.0)))
    assert counts.syncs == 4, counts.sync_ops
    assert counts.scalar_uploads == 1
    assert counts.ops > counts.syncs


@pytest.mark.parametrize("puzzle_table", [False, True], ids=["no-table", "puzzle-table"])
def test_a_non_logging_training_step_has_no_sync_point(tmp_path: Path, puzzle_table: bool) -> None:
    """Step 2 of a demo-size TRM fit (carry schedule, EMA, checkpointing, progress bar, the non-finite guard; with a
    puzzle table, its sparse SignSGD step), logging every 25 steps. The reference code has 2."""
    torch.manual_seed(0)
    data = GeneratedSudoku(size=4, train_size=64, val_size=8, test_size=8, batch_size=8, eval_batch_size=8,
                           cache_dir=str(tmp_path / "cache"))
    model = RecursiveReasoner(TRM(cycles=2, latent_steps=2, supervision_steps=8, halt_exploration=0.1),
                              NetworkConfig(hidden_size=64, num_heads=4, num_layers=2,
                                            puzzle_emb_len=2 if puzzle_table else 0),
                              OptimConfig(lr=1e-3, weight_decay=0.1, warmup_steps=100), vocab_size=6, seq_len=16,
                              num_puzzle_ids=3 if puzzle_table else 1)
    counter = TrainingStepCounter(2)
    trainer = L.Trainer(accelerator="cpu", max_steps=4, log_every_n_steps=25, limit_val_batches=0,
                        num_sanity_val_steps=0, enable_model_summary=False, logger=False, default_root_dir=tmp_path,
                        callbacks=[counter, EMA(decay=0.99)])
    trainer.fit(model, datamodule=data)
    assert counter.counts is not None and counter.counts.ops > 0
    assert counter.counts.syncs == 0, dict(counter.counts.sync_ops)
    assert counter.counts.collectives == 0
    assert "train/loss" in trainer.callback_metrics  # the last step logs what the interval summed
