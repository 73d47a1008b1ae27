"""HRM's rules on real tensors: the 1-step gradient window, the continue target and Q-learning halting."""

from __future__ import annotations

import torch
from conftest import tiny_batch

from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import HRM, Progress


def tiny_hrm(seed: int = 0) -> ReasoningNetwork:
    torch.manual_seed(seed)
    config = NetworkConfig(hidden_size=32, num_heads=4, num_layers=2, shared=False, mixer="attention",
                           positions="rope", puzzle_emb_len=1)
    return ReasoningNetwork(config, 6, 9, 3)


def test_the_network_for_hrm_has_two_modules() -> None:
    net = tiny_hrm()
    assert net.answer_module is not None and net.answer_module is not net.latent_module


def test_only_the_last_latent_and_answer_updates_carry_gradient() -> None:
    net = tiny_hrm()
    order: list[tuple[str, bool]] = []
    net.latent_module.register_forward_pre_hook(lambda m, a: order.append(("L", torch.is_grad_enabled())))
    net.answer_module.register_forward_pre_hook(lambda m, a: order.append(("H", torch.is_grad_enabled())))
    strategy = HRM(cycles=2, latent_steps=2, supervision_steps=4)
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    assert order == [("L", False), ("L", False), ("H", False), ("L", False), ("L", True), ("H", True)]
    out.logits.sum().backward()
    assert all(p.grad is not None for p in net.latent_module.parameters())
    assert all(p.grad is not None for p in net.answer_module.parameters())


def test_continue_target_is_the_next_segments_value() -> None:
    net = tiny_hrm()
    with torch.no_grad():
        net.q_head.weight.normal_()
    strategy = HRM(cycles=1, latent_steps=1, supervision_steps=3, halt_exploration=0.0)
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    carry.steps = torch.tensor([0, 1, 2, 0], dtype=torch.int32)  # slot 2 is at its last step
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    target = strategy.continue_target(net, carry, out, Progress(0))
    with torch.no_grad():
        x = net.embed(batch["inputs"], batch["puzzle_ids"])
        z = net.latent_step(out.z, out.y, x)
        q = net.halt_logits(net.answer_step(out.y, z))
    expected = torch.sigmoid(q.max(-1).values)
    expected[2] = torch.sigmoid(q[2, 0])  # last step: the halt value only
    assert torch.allclose(target, expected, atol=1e-6)
    loss = strategy.loss(net, carry, out, Progress(0))
    manual = torch.nn.functional.binary_cross_entropy_with_logits(out.continue_logits, expected, reduction="sum")
    assert torch.allclose(loss.terms["q_continue_loss"], manual, atol=1e-5)
    halt = loss.terms["q_halt_loss"]
    assert torch.allclose(loss.total, loss.terms["lm_loss"] + 0.5 * (halt + manual).double(), atol=1e-5)
    assert "q_continue_loss" not in strategy.loss(net, carry, out, Progress(0), training=False).terms


def test_training_halts_when_q_halt_exceeds_q_continue() -> None:
    net = tiny_hrm()
    strategy = HRM(cycles=1, latent_steps=1, supervision_steps=8, halt_exploration=0.0)
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    with torch.no_grad():
        net.q_head.bias.copy_(torch.tensor([1.0, 2.0]))
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    assert not strategy.advance(carry, out, training=True).halted.any()
    with torch.no_grad():
        net.q_head.bias.copy_(torch.tensor([-1.0, -2.0]))  # both negative: TRM would not halt, HRM does
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    assert strategy.advance(carry, out, training=True).halted.all()
