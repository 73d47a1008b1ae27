"""The TRM paper's Table 1 ablations as strategies: the 1-step gradient variant and TRM with HRM's continue ACT."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_batch

from datamodules import GeneratedSudoku
from recursive_reasoning.module import OptimConfig, RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import HRM, TRM, Progress, RecursionStrategy, TRMOneStepGradient, TRMWithContinueACT
from strategies.conformance import check_strategy
from strategies.hrm import ContinueHalting


def tiny_net(seed: int = 0, mixer: str = "mlp") -> ReasoningNetwork:
    torch.manual_seed(seed)
    config = NetworkConfig(hidden_size=32, num_heads=4, num_layers=1, mixer=mixer,
                           positions="rope" if mixer == "attention" else "none", puzzle_emb_len=2)
    return ReasoningNetwork(config, 6, 9, num_puzzle_ids=3)


CASES = {
    "one_step": TRMOneStepGradient(cycles=3, latent_steps=2, supervision_steps=3),
    "one_step_single": TRMOneStepGradient(cycles=1, latent_steps=1, supervision_steps=2),
    "continue_act": TRMWithContinueACT(cycles=2, latent_steps=2, supervision_steps=3),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("mixer", ["mlp", "attention"])
def test_ablations_conform(name: str, mixer: str) -> None:
    check_strategy(CASES[name], tiny_net(mixer=mixer))


def test_one_step_gradient_declares_and_runs_two_calls_with_gradient() -> None:
    strategy = TRMOneStepGradient(cycles=3, latent_steps=6)
    assert strategy.module_calls(Progress(0), True) == (21, 2)
    net = tiny_net()
    flags: list[bool] = []
    net.latent_module.register_forward_pre_hook(lambda m, a: flags.append(torch.is_grad_enabled()))
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    strategy.run_segment(net, carry, Progress(0), training=True)
    assert flags == [False] * 19 + [True] * 2


def test_one_step_gradient_computes_the_same_values_as_trm() -> None:
    net = tiny_net()
    ours, trm = TRMOneStepGradient(cycles=3, latent_steps=2), TRM(cycles=3, latent_steps=2)
    batch = tiny_batch()
    carry = trm.refresh(net, trm.initial_carry(net, batch), batch)
    a = ours.run_segment(net, carry, Progress(0), training=True)
    b = trm.run_segment(net, carry, Progress(0), training=True)
    for x, y in ((a.logits, b.logits), (a.y, b.y), (a.z, b.z), (a.halt_logits, b.halt_logits)):
        assert torch.equal(x, y)


def test_continue_act_adds_the_weighted_continue_loss_to_trms() -> None:
    net = tiny_net()
    with torch.no_grad():
        net.q_head.weight.normal_()
    ours = TRMWithContinueACT(cycles=2, latent_steps=2, supervision_steps=3, halt_exploration=0.0)
    trm = TRM(cycles=2, latent_steps=2, supervision_steps=3, halt_exploration=0.0)
    batch = tiny_batch()
    carry = ours.refresh(net, ours.initial_carry(net, batch), batch)
    carry.steps = torch.tensor([0, 1, 2, 0], dtype=torch.int32)  # slot 2 is at its last step
    out = ours.run_segment(net, carry, Progress(0), training=True)
    loss, base = ours.loss(net, carry, out, Progress(0)), trm.loss(net, carry, out, Progress(0))
    assert set(loss.terms) == {"lm_loss", "q_halt_loss", "q_continue_loss"}
    assert torch.allclose(loss.total - base.total, ours.halt_loss_weight * loss.terms["q_continue_loss"].double(),
                          atol=1e-5)
    # The target is HRM's: the next segment's value, run without gradient from the new carry.
    with torch.no_grad():
        after = trm.run_segment(net, replace(carry, y=out.y, z=out.z), Progress(0), training=True)
    expected = torch.sigmoid(torch.maximum(after.halt_logits, after.continue_logits))
    expected[2] = torch.sigmoid(after.halt_logits[2])
    assert torch.allclose(ours.continue_target(net, carry, out, Progress(0)), expected, atol=1e-6)
    manual = F.binary_cross_entropy_with_logits(out.continue_logits, expected, reduction="sum")
    assert torch.allclose(loss.terms["q_continue_loss"], manual, atol=1e-5)
    assert "q_continue_loss" not in ours.loss(net, carry, out, Progress(0), training=False).terms


def test_continue_act_halts_when_q_halt_exceeds_q_continue() -> None:
    net = tiny_net()
    strategy = TRMWithContinueACT(cycles=1, latent_steps=1, supervision_steps=8, halt_exploration=0.0)
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    with torch.no_grad():
        net.q_head.bias.copy_(torch.tensor([1.0, 2.0]))  # q_halt > 0 but below q_continue: TRM halts, this does not
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    assert torch.equal(strategy.halt_signal(out), out.halt_logits > out.continue_logits)
    assert not strategy.advance(carry, out, training=True).halted.any()
    assert TRM(supervision_steps=8, halt_exploration=0.0).advance(carry, out, training=True).halted.all()
    with torch.no_grad():
        net.q_head.bias.copy_(torch.tensor([-1.0, -2.0]))
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    assert strategy.advance(carry, out, training=True).halted.all()


def test_continue_halting_is_one_implementation_shared_with_hrm() -> None:
    assert issubclass(HRM, ContinueHalting) and issubclass(TRMWithContinueACT, ContinueHalting)
    for name in ("halt_signal", "continue_target", "extra_loss_terms"):
        assert getattr(HRM, name) is getattr(ContinueHalting, name) is getattr(TRMWithContinueACT, name)
    assert TRMWithContinueACT.recurse is TRM.recurse


@pytest.mark.parametrize("cls", [TRMOneStepGradient, TRMWithContinueACT])
def test_ablations_rebuild_from_hparams(cls: type[TRM]) -> None:
    strategy = cls(cycles=2, latent_steps=3, supervision_steps=5, halt_loss_weight=0.25)
    data = strategy.hparams()
    assert data["class_path"] == f"strategies.trm_ablations.{cls.__name__}"
    rebuilt = RecursionStrategy.from_hparams(data)
    assert type(rebuilt) is cls and rebuilt.hparams() == data
    settings = (rebuilt.cycles, rebuilt.latent_steps, rebuilt.supervision_steps, rebuilt.halt_loss_weight)
    assert settings == (2, 3, 5, 0.25)


@pytest.mark.parametrize("cls", [TRMOneStepGradient, TRMWithContinueACT])
def test_ablations_train_in_lightning(cls: type[TRM], tmp_path: Path) -> None:
    torch.manual_seed(0)
    data = GeneratedSudoku(size=4, train_size=32, val_size=4, test_size=4, batch_size=8, cache_dir=str(tmp_path))
    network = NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=0)
    model = RecursiveReasoner(cls(cycles=2, latent_steps=1, supervision_steps=2), network,
                              OptimConfig(lr=1e-3, warmup_steps=0), vocab_size=6, seq_len=16)
    before = {k: v.detach().clone() for k, v in model.net.named_parameters()}
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=1,
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 3
    assert any(not torch.equal(before[k], v) for k, v in model.net.named_parameters()), "training moved no weight"
    assert all(torch.isfinite(v).all() for v in model.net.parameters())
