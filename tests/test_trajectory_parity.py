"""Whole-trajectory parity with the reference TRM training loop: ../shared/parity/trm_train_trajectory.pt.

The file records 16 optimiser steps of the public reference code (README section "TRM training-trajectory test
vectors"). rr's own training runs them here: `RecursiveReasoner.training_step` under `Trainer.fit`, with its
AdamATan2 + SignSGD bundle, its warmup/cosine scheduler and the `EMA` callback, on the recorded batches in order.
A recording callback compares every step (learning rates, loss, logits, q logits, predictions, reset slots, carry,
logged metrics, puzzle-table gradient and table, parameter and EMA norms), then the final weights, Adam moments, the
EMA copy and the evaluation of the EMA and the live weights. Any failure names the first step it occurs at: the
carry and the optimiser state make every later step differ too.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from conftest import require_shared
from lightning.pytorch.loggers import Logger
from torch import Tensor
from torch.utils.data import DataLoader

from recursive_reasoning.callbacks import EMA
from recursive_reasoning.reference_names import load_reference_weights, network_config_from_reference, reference_key_to_ours
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.optim import AdamATan2, SignSGD
from strategies import TRM, Progress

pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 2e-4  # the README's pass bound (scale-relative) for every float tensor; it expects <= 3e-5
LR_TOLERANCE = 1e-12  # plain Python arithmetic on both sides


def scale_relative_error(actual: Tensor, expected: Tensor) -> float:
    """max |actual - expected| / max |expected| (the README's measure)."""
    expected = expected.double()
    return ((actual.double() - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def as_batch(raw: dict[str, Tensor]) -> dict[str, Tensor]:
    """A reference batch under rr's keys and dtypes."""
    ids = raw["puzzle_identifiers"].long()
    return {"inputs": raw["inputs"].long(), "labels": raw["labels"].long(), "puzzle_ids": ids}


class Findings:
    """Every comparison's outcome; `first_failures` gives, per quantity, the first step where it is out of bounds."""

    def __init__(self) -> None:
        self.worst: dict[str, float] = {}
        self.failures: dict[str, tuple[str, str]] = {}

    def close(self, quantity: str, where: str, actual: Tensor, expected: Tensor, tolerance: float = TOLERANCE) -> None:
        """Scale-relative comparison of two float tensors."""
        if actual.shape != expected.shape:
            self.fail(quantity, where, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}")
            return
        err = scale_relative_error(actual, expected)
        self.worst[quantity] = max(self.worst.get(quantity, 0.0), err)
        if not err <= tolerance:
            self.fail(quantity, where, f"scale-relative error {err:.2e} > {tolerance:g}")

    def scalar(self, quantity: str, where: str, actual: float, expected: float, tolerance: float) -> None:
        """Relative comparison of two numbers (absolute below magnitude 1)."""
        err = abs(actual - expected) / max(abs(expected), 1.0)
        self.worst[quantity] = max(self.worst.get(quantity, 0.0), err)
        if not err <= tolerance:
            self.fail(quantity, where, f"{actual!r} != {expected!r} (error {err:.2e} > {tolerance:g})")

    def equal(self, quantity: str, where: str, actual: Any, expected: Any) -> None:
        """Exact comparison of integer or bool tensors (or plain values)."""
        same = torch.equal(actual, expected) if isinstance(expected, Tensor) else actual == expected
        if not same:
            self.fail(quantity, where, f"{actual} != {expected}")

    def fail(self, quantity: str, where: str, detail: str) -> None:
        self.failures.setdefault(quantity, (where, detail))

    def report(self) -> str:
        return "\n".join(f"{quantity}: first fails at {where}: {detail}" for quantity, (where, detail)
                         in self.failures.items())


class MemoryLogger(Logger):
    """Keeps every `log_metrics` call: what the module logged at each step."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[int, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.setdefault(int(step), {}).update({k: float(v) for k, v in metrics.items()})

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class TrajectoryCheck(L.Callback):
    """Compares each of rr's training steps with the reference record of the same step, as it happens."""

    def __init__(self, vector: dict[str, Any], ema: EMA, findings: Findings) -> None:
        self.records = vector["steps"]
        self.ema = ema
        self.found = findings
        self.reference_name: dict[str, str] = {}
        self.live_state: dict[str, Tensor] = {}
        self.adam_state: dict[str, dict[str, Tensor]] = {}
        self.steps_checked = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.reference_name = {reference_key_to_ours(name, shared=True): name for name in self.records[0]["param_l2"]}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: RecursiveReasoner, batch: Any, batch_idx: int
    ) -> None:
        record, where = self.records[batch_idx], f"step {batch_idx + 1}"
        reset = torch.ones(4, dtype=torch.bool) if pl_module.carry is None else pl_module.carry.halted.clone()
        self.found.equal("reset slots", where, reset, record["reset"])

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: RecursiveReasoner, optimizer: Any) -> None:
        step = trainer.global_step
        record, where = self.records[step], f"step {step + 1}"
        (adam,) = [opt for opt in optimizer.optimizers if isinstance(opt, AdamATan2)]
        (sign,) = [opt for opt in optimizer.optimizers if isinstance(opt, SignSGD)]
        self.found.scalar("lr", where, adam.param_groups[0]["lr"], record["lr"], LR_TOLERANCE)
        self.found.scalar("puzzle lr", where, sign.param_groups[0]["lr"], record["puzzle_emb_lr"], LR_TOLERANCE)
        table = pl_module.net.puzzle_embedding.weight
        expected = torch.zeros_like(table).index_add_(0, record["puzzle_emb_local_ids"].long(),
                                                      record["puzzle_emb_local_grad"])
        self.found.close("puzzle-table gradient", where, table.grad.to_dense(), expected)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: RecursiveReasoner, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        record, where = self.records[batch_idx], f"step {batch_idx + 1}"
        self.found.equal("optimiser step", where, trainer.global_step, record["step"])
        size = batch["inputs"].shape[0]
        self.found.close("loss", where, outputs["loss"].detach() * size, record["loss"])
        segment = pl_module.last_segment
        self.found.close("logits", where, segment.logits, record["logits"])
        self.found.close("q_halt logits", where, segment.halt_logits, record["q_halt_logits"])
        self.found.equal("preds", where, segment.logits.argmax(-1), record["preds"])
        carry, expected = pl_module.carry, record["carry"]
        self.found.equal("carry halted", where, carry.halted, expected["halted"])
        self.found.equal("carry steps", where, carry.steps, expected["steps"].long())
        for ours, theirs in (("inputs", "inputs"), ("labels", "labels"), ("puzzle_ids", "puzzle_identifiers")):
            self.found.equal(f"carry current_data {ours}", where, carry.batch[ours],
                             expected["current_data"][theirs].long())
        self.found.close("puzzle table", where, pl_module.net.puzzle_embedding.weight, record["puzzle_emb_weights"])
        live = dict(pl_module.net.named_parameters())
        averaged = dict(self.ema._average_model.module.net.named_parameters())
        for ours, theirs in self.reference_name.items():
            self.found.scalar("param L2", where, live[ours].double().norm().item(), record["param_l2"][theirs],
                              TOLERANCE)
            self.found.scalar("EMA L2", where, averaged[ours].double().norm().item(), record["ema_l2"][theirs],
                              TOLERANCE)
        self.live_state = {name: t.detach().clone() for name, t in pl_module.net.state_dict().items()}
        (adam,) = [opt for opt in trainer.optimizers[0].optimizers if isinstance(opt, AdamATan2)]
        self.adam_state = {self.reference_name[name]: {k: v.clone() for k, v in adam.state[p].items()}
                           for name, p in pl_module.net.named_parameters() if name in self.reference_name}
        self.steps_checked += 1

    def check_logged(self, logged: dict[int, dict[str, float]]) -> None:
        """The logged train metrics: means over the rows halted after the step that have a label, as the reference."""
        for index, record in enumerate(self.records):
            where, ours, theirs = f"step {index + 1}", logged.get(index, {}), record["logged"]
            count = int(record["metrics"]["count"])
            self.found.equal("metric count (train/finished)", where, ours.get("train/finished"), float(count))
            for name in ("lm_loss", "q_halt_loss"):
                self.found.scalar(f"train/{name}", where, ours.get(f"train/{name}", math.nan), theirs[f"train/{name}"],
                                  TOLERANCE)
            if count == 0:  # no mean to compare: the logger repeats the last one
                continue
            for name in ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps"):
                key = f"train/{name}"
                self.found.scalar(key, where, ours.get(key, math.nan), theirs[key], 1e-6)
                if name in ("exact_accuracy", "q_halt_accuracy", "steps"):
                    self.found.equal(f"{name} count", where, round(ours.get(key, math.nan) * count),
                                     int(record["metrics"][name]))


def reference_model(vector: dict[str, Any]) -> RecursiveReasoner:
    """rr's model for the file's config and `pretrain_config`, holding the reference's initial weights."""
    config, train = vector["config"], vector["pretrain_config"]
    network, vocab, seq_len, num_ids = network_config_from_reference(config, vector["model_class"])
    strategy = TRM(cycles=config["H_cycles"], latent_steps=config["L_cycles"],
                   supervision_steps=config["halt_max_steps"], halt_exploration=config["halt_exploration_prob"],
                   loss_type="stablemax", halt_loss_weight=0.5)
    optim = OptimConfig(lr=train["lr"], weight_decay=train["weight_decay"], betas=(train["beta1"], train["beta2"]),
                        warmup_steps=train["lr_warmup_steps_rounded"], lr_min_ratio=train["lr_min_ratio"],
                        puzzle_emb_lr=train["puzzle_emb_lr"], puzzle_emb_weight_decay=train["puzzle_emb_weight_decay"])
    torch.manual_seed(vector["seed"])
    model = RecursiveReasoner(strategy, network, optim, vocab_size=vocab, seq_len=seq_len, num_puzzle_ids=num_ids)
    load_reference_weights(model.net, vector["initial_state_dict"])
    return model


def evaluation_segments(model: RecursiveReasoner, batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """Each evaluation segment of rr's strategy on `batch` from a fresh carry, as the reference `evaluate()` runs."""
    strategy, net = model.strategy, model.net
    net.eval()
    segments = []
    with torch.inference_mode():
        carry = strategy.initial_carry(net, batch)
        for _ in range(strategy.supervision_steps):
            carry = strategy.refresh(net, carry, batch)
            out = strategy.run_segment(net, carry, Progress(0), training=False)
            carry = strategy.advance(carry, out, training=False)
            segments.append({"logits": out.logits, "q_halt_logits": out.halt_logits, "steps": carry.steps.clone(),
                             "halted": carry.halted.clone()})
    return segments


def check_evaluation(found: Findings, label: str, model: RecursiveReasoner, records: list[dict[str, Any]],
                     batch: dict[str, Tensor], tmp_path: Path) -> None:
    """Segment-by-segment evaluation, then rr's validation metrics against the reference's reduced metrics."""
    ours = evaluation_segments(model, batch)
    found.equal(f"{label} segments", "evaluation", len(ours), len(records))
    for index, (segment, record) in enumerate(zip(ours, records)):
        where = f"{label} segment {index + 1}"
        found.close(f"{label} logits", where, segment["logits"], record["logits"])
        found.close(f"{label} q_halt logits", where, segment["q_halt_logits"], record["q_halt_logits"])
        found.equal(f"{label} preds", where, segment["logits"].argmax(-1), record["preds"])
        found.equal(f"{label} steps", where, segment["steps"], record["steps"].long())
        found.equal(f"{label} halted", where, segment["halted"], record["halted"])
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        default_root_dir=tmp_path)
    (logged,) = trainer.validate(model, DataLoader([batch], batch_size=None), verbose=False)
    reduced = records[-1]["reduced_metrics"]
    for name in ("accuracy", "exact_accuracy", "q_halt_accuracy", "steps"):
        found.scalar(f"{label} val/{name}", "evaluation", logged[f"val/{name}"], reduced[name], 1e-6)
    size = batch["inputs"].shape[0]
    found.scalar(f"{label} val/lm_loss", "evaluation", logged["val/lm_loss"] * size,
                 records[-1]["metrics"]["lm_loss"].item(), TOLERANCE)


def test_sixteen_training_steps_match_the_reference_trajectory(tmp_path: Path) -> None:
    vector = torch.load(require_shared("parity/trm_train_trajectory.pt"), weights_only=True)
    model = reference_model(vector)
    train = vector["pretrain_config"]
    found = Findings()
    ema = EMA(decay=train["ema_rate"])
    check = TrajectoryCheck(vector, ema, found)
    logger = MemoryLogger()
    trainer = L.Trainer(accelerator="cpu", max_steps=train["total_steps"], logger=logger, log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path, callbacks=[ema, check])
    batches = [as_batch(raw) for raw in vector["batches"]]
    buffers = {name: b.clone() for name, b in model.net.named_buffers()}
    trainer.fit(model, DataLoader(batches, batch_size=None, shuffle=False))
    assert check.steps_checked == train["total_steps"], "every recorded step ran"
    check.check_logged(logger.metrics)

    shared = model.net.answer_module is None
    live = check.live_state
    for name, expected in vector["state_dict"].items():
        found.close("final weights", name, live[reference_key_to_ours(name, shared)], expected)
    adam = vector["optimizer"]["adam_atan2"]
    for name in adam["param_order"]:
        state = check.adam_state[name]
        found.equal("Adam step", name, float(state["step"]), float(adam["step"]))
        found.close("Adam exp_avg", name, state["exp_avg"], adam["exp_avg"][name])
        found.close("Adam exp_avg_sq", name, state["exp_avg_sq"], adam["exp_avg_sq"][name])
    # after fit the module holds the EMA copy: averaged parameters, live table and buffers
    averaged = model.net.state_dict()
    for name, expected in vector["ema"]["state_dict"].items():
        found.close("EMA copy", name, averaged[reference_key_to_ours(name, shared)], expected)
    for name, buffer in model.net.named_buffers():  # constant: the EMA copy uses the live ones, bit for bit
        found.equal("EMA copy buffers", name, buffer, buffers[name])

    test_batch = as_batch(vector["test_batch"])
    check_evaluation(found, "eval_ema", model, vector["eval_ema"], test_batch, tmp_path / "ema")
    live_model = copy.deepcopy(model)
    live_model.net.load_state_dict(live)
    check_evaluation(found, "eval_live", live_model, vector["eval_live"], test_batch, tmp_path / "live")

    worst = ", ".join(f"{quantity} {err:.1e}" for quantity, err in sorted(found.worst.items()))
    assert not found.failures, f"rr departs from the reference trajectory:\n{found.report()}\nworst errors: {worst}"
