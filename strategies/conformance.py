"""Conformance checks any `RecursionStrategy` can run in its tests (built-in ones and users' own).

`check_strategy(strategy, network)` runs real segments on a small network and raises AssertionError naming the
broken rule: the gradient reaches exactly the module calls the strategy declares, the carry follows the network's
dtype and device, evaluation is deterministic, and every parameter receives a gradient (so DDP needs no search for
unused parameters) unless the strategy names the ones it leaves out and why.
"""

from __future__ import annotations

import torch
from torch import nn

from recursive_reasoning.core.network import ReasoningNetwork
from strategies.base import Batch, Progress, RecursionStrategy


def random_batch(net: ReasoningNetwork, size: int = 4, seed: int = 0) -> Batch:
    """A batch of random tokens, labels and puzzle ids that fits `net`."""
    g = torch.Generator().manual_seed(seed)
    device = net.y_init.device
    num_ids = net.puzzle_embedding.num_embeddings if net.prefix_len else 1
    return {
        "inputs": torch.randint(1, net.vocab_size, (size, net.seq_len), generator=g).to(device),
        "labels": torch.randint(1, net.vocab_size, (size, net.seq_len), generator=g).to(device),
        "puzzle_ids": torch.randint(0, num_ids, (size,), generator=g).to(device),
    }


def _update_modules(net: ReasoningNetwork) -> list[nn.Module]:
    return [net.latent_module] + ([net.answer_module] if net.answer_module is not None else [])


def check_gradient_window(strategy: RecursionStrategy, net: ReasoningNetwork, progress: Progress) -> None:
    """The calls made with gradient enabled are exactly the declared ones, and none reaches the previous segment."""
    grad_flags: list[bool] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: grad_flags.append(torch.is_grad_enabled()))
             for m in _update_modules(net)]
    batch = random_batch(net)
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    try:
        first = strategy.run_segment(net, carry, progress, training=True)
    finally:
        for hook in hooks:
            hook.remove()
    calls, with_grad = strategy.calls_made(first, progress, training=True)
    assert len(grad_flags) == calls, f"{strategy!r} made {len(grad_flags)} module calls, declared {calls}"
    assert sum(grad_flags) == with_grad, f"{strategy!r} ran {sum(grad_flags)} calls with gradient, declared {with_grad}"
    for state in (first.y, first.z):
        if state.requires_grad:
            state.retain_grad()
    carry = strategy.refresh(net, strategy.advance(carry, first, training=True), batch)
    second = strategy.run_segment(net, carry, progress, training=True)
    strategy.loss(net, carry, second, progress).total.backward()
    leaked = [name for name, t in (("answer", first.y), ("latent", first.z)) if t.grad is not None]
    assert not leaked, f"{strategy!r}: gradient flows back into the {leaked} state of the previous segment"


def check_carry_follows_network(strategy: RecursionStrategy, net: ReasoningNetwork, progress: Progress) -> None:
    """After a segment the carried states have the network's dtype and device and are detached."""
    for dtype in (torch.float32, torch.float64):
        net.to(dtype)
        batch = random_batch(net)
        carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
        out = strategy.run_segment(net, carry, progress, training=True)
        carry = strategy.advance(carry, out, training=True)
        for name, state in (("y", carry.y), ("z", carry.z)):
            assert state.dtype == dtype, f"{strategy!r}: carry.{name} is {state.dtype}, the network is {dtype}"
            assert state.device == net.y_init.device, f"{strategy!r}: carry.{name} is on {state.device}"
            assert not state.requires_grad, f"{strategy!r}: carry.{name} is not detached after the segment"
    net.float()


def check_deterministic_evaluation(strategy: RecursionStrategy, net: ReasoningNetwork, progress: Progress) -> None:
    """Two evaluations of the same batch (`reasoning_steps`) give identical logits and halting decisions."""
    batch = random_batch(net)
    runs = [[(step.logits, step.halt_logits, step.halted) for step in strategy.reasoning_steps(net, batch, progress)]
            for _ in range(2)]
    for first, second in zip(*runs):
        for a, b in zip(first, second):
            assert torch.equal(a, b), f"{strategy!r}: evaluation is not deterministic"


def check_every_parameter_learns(strategy: RecursionStrategy, net: ReasoningNetwork, progress: Progress) -> None:
    """One training segment's loss gives every parameter a gradient, except those the strategy declares unused."""
    net.zero_grad(set_to_none=True)
    batch = random_batch(net)
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    out = strategy.run_segment(net, carry, progress, training=True)
    strategy.loss(net, carry, out, progress).total.backward()
    excused = strategy.unused_parameters(net)
    missing = [name for name, p in net.named_parameters() if p.grad is None and name not in excused]
    assert not missing, (
        f"{strategy!r}: no gradient reaches {missing}; declare them in unused_parameters() with a reason"
    )


def check_strategy(strategy: RecursionStrategy, net: ReasoningNetwork, progress: Progress | None = None) -> None:
    """Run every conformance check on `strategy` with `net` (a small network is enough)."""
    progress = progress if progress is not None else Progress(0, 100)
    torch.manual_seed(0)
    check_gradient_window(strategy, net, progress)
    check_carry_follows_network(strategy, net, progress)
    check_deterministic_evaluation(strategy, net, progress)
    check_every_parameter_learns(strategy, net, progress)
