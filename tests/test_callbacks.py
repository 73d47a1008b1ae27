"""The EMA callback: the reference's averaging rule, live parameters (the puzzle table) and buffers stay current in
validation, checkpoints and resumed runs; the late checkpoints of an ensemble."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from torch import Tensor, nn

from datamodules import GeneratedSudoku
from recursive_reasoning.callbacks import EMA, LateCheckpoints, late_checkpoints, live_parameter_names
from recursive_reasoning.checkpoint_io import AtomicCheckpointIO
from recursive_reasoning.dispatch_counts import OpCounter
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig
from strategies import TRM

TABLE = "net.puzzle_embedding.weight"


def tiny_model() -> RecursiveReasoner:
    """A TRM with a 3-row puzzle table; large learning rates so a few steps move the weights away from their EMA."""
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=2)
    optim = OptimConfig(lr=1e-2, warmup_steps=0, puzzle_emb_lr=1e-1, puzzle_emb_weight_decay=0.1)
    return RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=2), network, optim, vocab_size=6,
                             seq_len=16, num_puzzle_ids=3)


def tiny_data(tmp_path: Path) -> GeneratedSudoku:
    return GeneratedSudoku(size=4, givens=8, train_size=64, val_size=8, test_size=8, batch_size=8,
                           cache_dir=str(tmp_path / "cache"))


def tiny_trainer(root: Path, max_steps: int, callbacks: list[L.Callback]) -> L.Trainer:
    """Validates (and checkpoints) every 4 steps."""
    return L.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0, val_check_interval=4,
                     default_root_dir=root, callbacks=[*callbacks, ModelCheckpoint(dirpath=root / "ckpt")])


def snapshot(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in tensors.items()}


class Probe(L.Callback):
    """Records the live weights and the EMA's averages after each step and the weights seen during validation."""

    def __init__(self, ema: EMA) -> None:
        self.ema = ema
        self.current: dict[str, Tensor] = {}
        self.averaged: dict[str, Tensor] = {}
        self.in_validation: dict[str, Tensor] = {}
        self.after_validation: dict[str, Tensor] = {}
        self.at_start: dict[str, Tensor] = {}
        self.averaged_at_start: dict[str, Tensor] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.at_start = snapshot(dict(pl_module.named_parameters()))
        self.averaged_at_start = snapshot(self.ema._average_model.module.state_dict())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.current = snapshot(dict(pl_module.named_parameters()))
        self.averaged = snapshot(dict(self.ema._average_model.module.named_parameters()))

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.in_validation = snapshot(dict(pl_module.named_parameters()))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.after_validation = snapshot(dict(pl_module.named_parameters()))


def assert_tensors_equal(actual: dict[str, Tensor], expected: dict[str, Tensor], what: str) -> None:
    assert actual.keys() == expected.keys(), what
    for name, value in expected.items():
        assert torch.equal(actual[name], value), f"{what}: {name}"


def test_ema_keeps_the_puzzle_table_live_in_validation_and_checkpoints(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_model()
    initial_table = model.net.puzzle_embedding.weight.detach().clone()
    ema = EMA(decay=0.5)
    probe = Probe(ema)
    tiny_trainer(tmp_path, 4, [ema, probe]).fit(model, tiny_data(tmp_path))

    live, averaged = probe.current, probe.averaged
    assert TABLE not in averaged, "the averaged model keeps no copy of the table"
    assert ema._average_model.module.get_submodule("net.puzzle_embedding").weight is None
    assert not torch.equal(live[TABLE], initial_table), "the table was trained"
    moved = [name for name in averaged if not torch.equal(averaged[name], live[name])]
    assert moved, "the averages differ from the live weights, so the checks below tell them apart"

    assert torch.equal(probe.in_validation[TABLE], live[TABLE]), "validation uses the live table"
    assert_tensors_equal({k: v for k, v in probe.in_validation.items() if k != TABLE}, averaged,
                         "validation uses the averaged weights")
    assert_tensors_equal(probe.after_validation, live, "validation end restores the live weights")

    checkpoint = torch.load(next((tmp_path / "ckpt").glob("*.ckpt")), weights_only=False)
    state, current = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert torch.equal(state[TABLE], live[TABLE]), "the checkpoint's state_dict holds the live table"
    assert_tensors_equal({k: state[k] for k in averaged}, averaged, "the checkpoint's state_dict holds the averages")
    assert_tensors_equal({k: current[k] for k in live}, live, "current_model_state holds the live weights")
    assert state[TABLE].untyped_storage().data_ptr() == current[TABLE].untyped_storage().data_ptr(), (
        "the table is stored once")

    final = dict(model.named_parameters())
    assert torch.equal(final[TABLE], live[TABLE]), "after training the module keeps the live table"
    assert_tensors_equal({k: final[k] for k in averaged}, averaged, "after training the module holds the averages")


def test_resume_restores_the_live_table_and_the_averages(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tiny_trainer(tmp_path / "a", 4, [EMA(decay=0.5)]).fit(tiny_model(), tiny_data(tmp_path))
    path = next((tmp_path / "a" / "ckpt").glob("*.ckpt"))
    saved = torch.load(path, weights_only=False)

    ema = EMA(decay=0.5)
    probe = Probe(ema)
    tiny_trainer(tmp_path / "b", 6, [ema, probe]).fit(tiny_model(), tiny_data(tmp_path), ckpt_path=path)

    current = saved["current_model_state"]
    assert_tensors_equal(probe.at_start, {k: current[k] for k in probe.at_start}, "resume starts from the live weights")
    averaged = {k: v for k, v in saved["state_dict"].items() if k != TABLE}
    assert_tensors_equal(probe.averaged_at_start, averaged, "resume restores the averages")
    assert int(ema._average_model.n_averaged) == int(saved["averaging_state"]["n_averaged"]) + 2


class CountingModel(BoringModel):
    """BoringModel with a buffer that every training step changes: the EMA must use it live, never average it."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("counter", torch.zeros(()))

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self.counter += 1
        return super().training_step(batch, batch_idx)


class Weights(L.Callback):
    """The module's parameters at the start of training and after every optimiser step."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Tensor]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seen = [snapshot(dict(pl_module.named_parameters()))]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen.append(snapshot(dict(pl_module.named_parameters())))


@pytest.mark.parametrize("start", [None, 2])
def test_ema_follows_the_reference_rule_from_the_initial_weights(tmp_path: Path, start: int | None) -> None:
    """The reference EMAHelper: the average is registered before the first averaged update (not copied after it, as
    EMAWeightAveraging does), then average <- decay * average + (1 - decay) * weight; buffers stay live."""
    torch.manual_seed(0)
    model, decay, steps = CountingModel(), 0.5, 4
    ema, weights = EMA(decay=decay, update_starting_at_step=start), Weights()
    trainer = L.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, callbacks=[ema, weights])
    trainer.fit(model)
    first = start or 0
    expected = weights.seen[first]
    for step in weights.seen[first + 1:]:
        expected = {name: decay * expected[name] + (1 - decay) * step[name] for name in expected}
    assert not any(torch.equal(expected[name], weights.seen[-1][name]) for name in expected), "the rule is visible"
    assert ema.n_averaged == int(ema._average_model.n_averaged) == steps - first + 1, "registered, then once a step"
    assert_tensors_equal(dict(model.named_parameters()), expected, "after training the module holds the average")
    assert float(model.counter) == steps, "the buffer is the live one, not an average of its values"

    path = tmp_path / "ema.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=False)["state_dict"]
    assert_tensors_equal({name: state[name] for name in expected}, expected, "the checkpoint holds the average")
    assert float(state["counter"]) == steps, "the checkpoint holds the live buffer"


class CountedEMA(EMA):
    """EMA recording the aten ops of each `on_train_batch_end` (where the average is updated)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ops: list[dict[str, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with OpCounter() as counter:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.ops.append(dict(counter.counts.by_name()))


def test_an_ema_update_is_four_multi_tensor_ops_without_a_device_read(tmp_path: Path) -> None:
    """`AveragedModel.update_parameters` ran ~100 ops (a detach and an op per tensor) and read its device counter
    twice; the update is now 4 foreach ops and the count lives on the host, plus one `where` that picks the factors
    by the non-finite guard's flag."""
    torch.manual_seed(0)
    ema = CountedEMA(decay=0.5)
    tiny_trainer(tmp_path, 3, [ema]).fit(tiny_model(), tiny_data(tmp_path))
    update = {"where": 1, "unbind": 1, "_foreach_mul": 2, "_foreach_add": 1, "_foreach_copy_": 1}
    assert ema.ops == [update] * 3
    assert ema.n_averaged == 4


def test_unknown_live_parameter_name_is_rejected() -> None:
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.table = nn.Embedding(3, 2)

        def live_parameter_names(self) -> list[str]:
            return ["table.weights"]

    with pytest.raises(ValueError, match=r"table\.weights"):
        live_parameter_names(Named())


class RecordingIO(AtomicCheckpointIO):
    """The project's atomic checkpoint writer, remembering what it wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.saved: list[Path] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        self.saved.append(Path(path))


def test_late_checkpoints_keep_every_n_steps_over_the_last_part_of_training(tmp_path: Path) -> None:
    torch.manual_seed(0)
    io = RecordingIO()
    late = LateCheckpoints(every_n_steps=2, last_fraction=0.5)
    trainer = L.Trainer(accelerator="cpu", max_steps=10, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, plugins=[io],
                        callbacks=[late, ModelCheckpoint(dirpath=tmp_path / "ckpt")])
    trainer.fit(tiny_model(), tiny_data(tmp_path))

    assert late.start_step(10) == 5
    kept = late_checkpoints(tmp_path / "ckpt")
    assert [p.name for p in kept] == ["late-step6.ckpt", "late-step8.ckpt", "late-step10.ckpt"], "sorted by step"
    assert [torch.load(p, weights_only=False)["global_step"] for p in kept] == [6, 8, 10]
    assert set(kept) <= set(io.saved), "written by the trainer's checkpoint IO"
    assert isinstance(trainer.checkpoint_callback, ModelCheckpoint) and trainer.checkpoint_callback is not late
    others = {p.name for p in (tmp_path / "ckpt").iterdir()} - {p.name for p in kept}
    assert any(name.startswith("epoch=") for name in others), "the run's own checkpoint is still written"


def test_late_checkpoints_rule_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def kept_steps(late: LateCheckpoints, max_steps: int, steps: list[int], start: int = 0) -> list[int]:
        saved: list[Path] = []
        trainer = SimpleNamespace(global_step=start, max_steps=max_steps, sanity_checking=False, fast_dev_run=False,
                                  save_checkpoint=lambda path, weights_only=False: saved.append(path))
        late.on_train_start(trainer, None)  # type: ignore[arg-type]
        for step in steps:
            trainer.global_step = step
            late.on_train_batch_end(trainer, None, None, None, 0)  # type: ignore[arg-type]
        assert all(p.parent == tmp_path for p in saved)
        return [int(p.name.removeprefix("late-step").removesuffix(".ckpt")) for p in saved]

    steps = list(range(1, 101))
    assert kept_steps(LateCheckpoints(10, 0.2, dirpath=str(tmp_path)), 100, steps) == [80, 90, 100]
    assert kept_steps(LateCheckpoints(5, 0.25, dirpath=str(tmp_path)), 100, steps) == [75, 80, 85, 90, 95, 100]
    assert kept_steps(LateCheckpoints(1, 1.0, dirpath=str(tmp_path)), 3, [1, 2, 3]) == [1, 2, 3]
    assert LateCheckpoints(1, 0.7).start_step(10) == 3, "no float round-off: (1 - 0.7) * 10 is step 3"
    # several optimiser steps per batch (the batch schedule): a batch that passes a multiple is saved at its end
    assert kept_steps(LateCheckpoints(2, 0.5, dirpath=str(tmp_path)), 12, [3, 6, 9, 12]) == [6, 9, 12]
    assert kept_steps(LateCheckpoints(2, 0.5, dirpath=str(tmp_path)), 12, [7, 8], start=6) == [8], "resumed at 6"

    no_checkpoint = SimpleNamespace(checkpoint_callback=None, log_dir=str(tmp_path / "logs"), default_root_dir="x")
    assert LateCheckpoints(2).directory(no_checkpoint) == tmp_path / "logs" / "checkpoints"  # type: ignore[arg-type]

    (tmp_path / "late-step12.ckpt").touch()
    (tmp_path / "late-step9.ckpt").touch()
    (tmp_path / "epoch=0-step=12.ckpt").touch()
    assert [p.name for p in late_checkpoints(tmp_path)] == ["late-step9.ckpt", "late-step12.ckpt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every_n_steps": 0}, "every_n_steps must be an integer >= 1"),
        ({"every_n_steps": 2.5}, "every_n_steps must be an integer >= 1"),
        ({"every_n_steps": True}, "every_n_steps must be an integer >= 1"),
        ({"every_n_steps": 2, "last_fraction": 0.0}, r"last_fraction must be in \(0, 1\]"),
        ({"every_n_steps": 2, "last_fraction": 1.5}, r"last_fraction must be in \(0, 1\]"),
        ({"every_n_steps": 2, "last_fraction": float("nan")}, r"last_fraction must be in \(0, 1\]"),
    ],
)
def test_late_checkpoints_reject_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LateCheckpoints(**kwargs)


def test_late_checkpoints_need_max_steps(tmp_path: Path) -> None:
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
                        callbacks=[LateCheckpoints(every_n_steps=2)])
    with pytest.raises(ValueError, match=r"needs Trainer\(max_steps=\.\.\.\) > 0.*max_steps=-1"):
        trainer.fit(tiny_model(), tiny_data(tmp_path))
