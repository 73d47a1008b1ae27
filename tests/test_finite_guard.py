"""The non-finite guard (`recursive_reasoning.finite_guard`): from a non-finite loss or gradient on, no update lands
(weights, puzzle table, Adam moments, EMA), decided on the device; the run stops at the next logging step or before
the next checkpoint, whichever comes first, and no checkpoint of a poisoned run is written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor

from recursive_reasoning.callbacks import EMA
from recursive_reasoning.finite_guard import FiniteGuard
from recursive_reasoning.module import RecursiveReasoner
from recursive_reasoning.optim import SignSGD
from test_callbacks import snapshot as clone, tiny_data, tiny_model  # a TRM with a puzzle table, large rates

BAD = 1  # the step whose loss (or gradient) is poisoned


class Snapshot(L.Callback):
    """The weights, Adam moments and EMA averages just before step BAD, and the last step the loop reached."""

    def __init__(self, ema: EMA) -> None:
        self.ema = ema
        self.weights: dict[str, Tensor] = {}
        self.moments: dict[str, Tensor] = {}
        self.averages: dict[str, Tensor] = {}
        self.reached = -1
        self.message = ""

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx) -> None:
        self.reached = trainer.global_step
        if trainer.global_step == BAD:
            self.weights, self.moments, self.averages = self.read(trainer, pl_module)

    def read(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[dict, dict, dict]:
        adam = trainer.optimizers[0].optimizers[0]
        moments = {f"{i}.{k}": adam.state[p][k] for i, p in enumerate(adam.param_groups[0]["params"])
                   for k in ("exp_avg", "exp_avg_sq")}
        averages = dict(self.ema._average_model.module.named_parameters())
        return clone(pl_module.state_dict()), clone(moments), clone(averages)


def poison_the_loss(model: RecursiveReasoner, trainer: L.Trainer) -> None:
    """Make the training loss NaN at step BAD only."""
    loss = model.strategy.loss

    def poisoned(*args, **kwargs):
        out = loss(*args, **kwargs)
        if trainer.global_step == BAD:
            return dataclasses.replace(out, total=out.total * float("nan"))
        return out

    model.strategy.loss = poisoned


def fit(tmp_path: Path, log_every: int, checkpoint_every: int | None, poison: str) -> tuple[Snapshot, L.Trainer,
                                                                                           RecursiveReasoner]:
    torch.manual_seed(0)
    model, ema = tiny_model(), EMA(decay=0.5)
    snapshot = Snapshot(ema)
    callbacks: list[L.Callback] = [ema, snapshot]
    if checkpoint_every:
        callbacks.append(ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=checkpoint_every,
                                         save_top_k=-1, filename="{step}"))
    trainer = L.Trainer(accelerator="cpu", max_steps=8, log_every_n_steps=log_every, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=callbacks,
                        enable_checkpointing=bool(checkpoint_every))
    if poison == "loss":
        poison_the_loss(model, trainer)
    else:
        model.net.lm_head.weight.register_hook(
            lambda grad: grad * float("nan") if trainer.global_step == BAD else grad)
    with pytest.raises(FloatingPointError) as error:
        trainer.fit(model, datamodule=tiny_data(tmp_path))
    snapshot.message = str(error.value)
    return snapshot, trainer, model


def assert_nothing_changed_since_the_bad_step(snapshot: Snapshot, trainer: L.Trainer, model: RecursiveReasoner):
    weights, moments, averages = snapshot.read(trainer, model)
    for before, after in ((snapshot.weights, weights), (snapshot.moments, moments), (snapshot.averages, averages)):
        assert before.keys() == after.keys()
        changed = [name for name in before if not torch.equal(before[name], after[name])]
        assert not changed, f"changed after the non-finite step: {changed}"


def test_a_nan_loss_skips_every_update_on_the_device_and_stops_at_the_next_logging_step(tmp_path: Path) -> None:
    snapshot, trainer, model = fit(tmp_path, log_every=4, checkpoint_every=None, poison="loss")
    assert f"the training loss is nan at step {BAD}" in snapshot.message
    assert snapshot.reached == 3, "the host learns of it at the logging step (step 3), not at the bad step"
    assert_nothing_changed_since_the_bad_step(snapshot, trainer, model)
    assert snapshot.weights["net.puzzle_embedding.weight"].abs().sum() > 0


def test_a_nan_gradient_with_a_finite_loss_is_caught_too(tmp_path: Path) -> None:
    snapshot, trainer, model = fit(tmp_path, log_every=4, checkpoint_every=None, poison="gradient")
    assert f"a gradient became non-finite at step {BAD} (the loss was finite)" in snapshot.message
    assert_nothing_changed_since_the_bad_step(snapshot, trainer, model)


def test_no_checkpoint_is_written_after_a_nan_loss(tmp_path: Path) -> None:
    snapshot, trainer, model = fit(tmp_path, log_every=50, checkpoint_every=1, poison="loss")
    assert snapshot.reached == BAD, "the checkpoint after the bad step reads the flag and stops the run"
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt")) == ["step=1.ckpt"]  # after step 0 only
    assert_nothing_changed_since_the_bad_step(snapshot, trainer, model)


def test_the_guard_folds_losses_and_gradients_without_reading_the_device() -> None:
    guard = FiniteGuard()
    assert guard.flag() is None
    guard.raise_if_tripped()  # nothing observed: nothing to raise
    guard.observe_loss(torch.tensor([1.0, 0.5]), ("loss", "lm"), step=0)
    guard.observe_gradients([torch.ones(3), torch.ones(2, dtype=torch.bfloat16)])
    assert bool(guard.keep) and float(guard.flag()) == 0.0
    guard.observe_gradients([torch.tensor([1.0, float("inf")])])
    guard.observe_loss(torch.tensor([float("nan"), float("nan")]), ("loss", "lm"), step=5)
    assert not bool(guard.keep) and float(guard.flag()) == 1.0
    with pytest.raises(FloatingPointError, match="a gradient became non-finite at step 0"):
        guard.raise_if_tripped()  # the first failure is reported, not the later one
    clean = FiniteGuard()
    clean.observe_loss(torch.tensor([1.0]), ("loss",), step=0)
    with pytest.raises(FloatingPointError, match="another rank"):
        clean.raise_if_tripped(1.0)  # this rank is clean, the summed flags say one rank is not


def test_signsgd_with_a_false_keep_leaves_the_table_as_it_is() -> None:
    table = torch.nn.Parameter(torch.randn(5, 3))
    before = table.detach().clone()
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3, 1]]), torch.full((3, 3), float("nan")), (5, 3))
    SignSGD([table], lr=0.1, weight_decay=0.1).step(keep=torch.tensor(False))
    assert torch.equal(table.detach(), before)
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 3, 1]]), torch.ones(3, 3), (5, 3))
    SignSGD([table], lr=0.1, weight_decay=0.1).step(keep=torch.tensor(True))
    touched = before[[1, 3]] * (1 - 0.1 * 0.1) - 0.1
    assert torch.equal(table.detach()[[1, 3]], touched) and torch.equal(table.detach()[[0, 2, 4]], before[[0, 2, 4]])
