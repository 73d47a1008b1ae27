"""TRM's rules on real tensors: the gradient window, the ACT carry, halting and exploration."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_batch

from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import TRM, Progress


def tiny_net(seed: int = 0) -> ReasoningNetwork:
    torch.manual_seed(seed)
    return ReasoningNetwork(NetworkConfig(hidden_size=32, num_heads=4, num_layers=2, puzzle_emb_len=2), 6, 9, 3)


def test_gradient_window_equals_hand_unrolled_reference() -> None:
    net = tiny_net()
    strategy = TRM(cycles=3, latent_steps=2, supervision_steps=4, halt_exploration=0.0)
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    strategy.loss(net, carry, out, Progress(0)).total.backward()
    ours = {name: p.grad.to_dense().clone() for name, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)

    # Hand-unrolled: 2 cycles without gradient, then one cycle (2 latent + 1 answer update) with gradient.
    x = net.embed(batch["inputs"], batch["puzzle_ids"])
    y, z = net.initial_states(4)
    with torch.no_grad():
        for _ in range(2):
            z = net.latent_module(z, y + x)
            z = net.latent_module(z, y + x)
            y = net.latent_module(y, z)
    z = net.latent_module(z, y + x)
    z = net.latent_module(z, y + x)
    y = net.latent_module(y, z)
    logits = net.lm_head(y[:, 2:]).double()
    s = torch.where(logits >= 0, logits + 1, 1 / (1 - logits))
    log_p = (s / s.sum(-1, keepdim=True)).log().gather(-1, batch["labels"][..., None]).squeeze(-1)
    lm = (-log_p).mean(-1).sum()
    exact = (logits.argmax(-1) == batch["labels"]).all(-1).float()
    q = net.q_head(y[:, 0])[:, 0]
    halt = torch.nn.functional.binary_cross_entropy_with_logits(q, exact, reduction="sum")
    (lm + 0.5 * halt).backward()
    for name, p in net.named_parameters():
        assert torch.allclose(ours[name], p.grad.to_dense(), atol=1e-6, rtol=1e-5), name


def test_only_the_last_cycle_runs_with_gradient() -> None:
    net = tiny_net()
    strategy = TRM(cycles=3, latent_steps=6, supervision_steps=16)
    grad_enabled: list[bool] = []
    net.latent_module.register_forward_pre_hook(lambda module, args: grad_enabled.append(torch.is_grad_enabled()))
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    assert grad_enabled == [False] * 14 + [True] * 7  # 21 module calls, 7 with gradient (the Sudoku recipe)
    # The state entering the last cycle carries no graph: nothing flows back into the no-grad cycles.
    assert out.y.requires_grad and out.z.requires_grad
    x_grad = []
    carry.y.requires_grad_(True)
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    out.logits.sum().backward()
    x_grad.append(carry.y.grad)
    assert x_grad[0] is None, "the carried answer state only enters the no-grad cycles"


def test_input_is_injected_only_into_latent_updates() -> None:
    net = tiny_net()
    calls: list[torch.Tensor] = []
    net.latent_module.register_forward_pre_hook(lambda module, args: calls.append(args[1]))
    strategy = TRM(cycles=1, latent_steps=1, supervision_steps=2)
    batch = tiny_batch()
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    strategy.run_segment(net, carry, Progress(0), training=False)
    x = net.embed(batch["inputs"], batch["puzzle_ids"])
    y0, z0 = net.initial_states(4)
    assert torch.allclose(calls[0], y0 + x)  # latent: z = f(z, y + x)
    z1 = net.latent_module(z0, y0 + x)
    assert torch.allclose(calls[1], z1)  # answer: y = f(y, z), no x


def test_refresh_resets_only_halted_slots_and_swaps_in_their_new_examples() -> None:
    net = tiny_net()
    strategy = TRM(cycles=1, latent_steps=1, supervision_steps=4, halt_exploration=0.0)
    first, second = tiny_batch(seed=1), tiny_batch(seed=2)
    carry = strategy.refresh(net, strategy.initial_carry(net, first), first)
    out = strategy.run_segment(net, carry, Progress(0), training=False)
    carry = strategy.advance(carry, out, training=False)
    carry.halted = torch.tensor([True, False, True, False])
    refreshed = strategy.refresh(net, carry, second)
    y0, z0 = net.initial_states(4)
    for slot, was_halted in enumerate([True, False, True, False]):
        source = second if was_halted else first
        for key in ("inputs", "labels", "puzzle_ids"):
            assert torch.equal(refreshed.batch[key][slot], source[key][slot])
        assert refreshed.steps[slot] == (0 if was_halted else 1)
        expected_y = y0[slot] if was_halted else carry.y[slot]
        assert torch.equal(refreshed.y[slot], expected_y)
        assert torch.equal(refreshed.z[slot], z0[slot] if was_halted else carry.z[slot])


def test_training_halts_on_positive_q_and_at_the_step_limit() -> None:
    net = tiny_net()
    strategy = TRM(cycles=1, latent_steps=1, supervision_steps=3, halt_exploration=0.0)
    batch = tiny_batch()
    with torch.no_grad():
        net.q_head.bias.copy_(torch.tensor([-5.0, 0.0]))
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    for step in range(1, 4):
        out = strategy.run_segment(net, carry, Progress(0), training=True)
        carry = strategy.advance(carry, out, training=True)
        assert carry.halted.tolist() == [step == 3] * 4
        carry = strategy.refresh(net, carry, batch)
    with torch.no_grad():
        net.q_head.bias.copy_(torch.tensor([5.0, 0.0]))
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    assert strategy.advance(carry, out, training=True).halted.all()
    assert not strategy.advance(carry, out, training=False).halted.any(), "evaluation ignores q_halt"


def test_exploration_holds_slots_for_a_random_minimum_of_steps() -> None:
    net = tiny_net()
    with torch.no_grad():
        net.q_head.bias.copy_(torch.tensor([5.0, 0.0]))  # q_halt > 0 everywhere: halt unless exploring
    strategy = TRM(cycles=1, latent_steps=1, supervision_steps=8, halt_exploration=1.0)
    batch = tiny_batch(size=256)
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    out = strategy.run_segment(net, carry, Progress(0), training=True)
    torch.manual_seed(0)
    halted = strategy.advance(carry, out, training=True).halted
    # After one step a slot halts only if its drawn minimum is <= 1, which never happens (minimum is in [2, 8]).
    assert not halted.any()
    strategy.halt_exploration = 0.0
    assert strategy.advance(carry, out, training=True).halted.all()


def test_evaluation_runs_all_segments_and_early_exit_is_optional() -> None:
    from recursive_reasoning.module import RecursiveReasoner

    torch.manual_seed(0)
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1, supervision_steps=5), NetworkConfig(
        hidden_size=32, num_heads=4, puzzle_emb_len=0), vocab_size=6, seq_len=9)
    batch = tiny_batch()
    assert model.solve(batch)["steps"].tolist() == [5] * 4
    with torch.no_grad():
        model.net.q_head.bias.copy_(torch.tensor([5.0, 0.0]))
    assert model.solve(batch, early_exit=True)["steps"].tolist() == [1] * 4
    assert model.solve(batch, early_exit=False)["steps"].tolist() == [5] * 4


def test_progress_fraction_needs_a_total() -> None:
    assert Progress(50, 200).fraction == 0.25
    with pytest.raises(ValueError, match="max_steps"):
        Progress(5).fraction


def test_strategy_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="probability"):
        TRM(halt_exploration=1.5)
    with pytest.raises(ValueError, match="loss_type"):
        TRM(loss_type="hinge")
    with pytest.raises(ValueError, match="cycles"):
        TRM(cycles=0)
