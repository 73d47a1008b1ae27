"""model.network.compile 'segment': one whole supervision segment of every strategy traces as one graph (fullgraph,
0 graph breaks, counted by `torch._dynamo.explain` on the CPU), runs like eager, and recompiles per depth, not per step.

The compiled runs use the `aot_eager` backend (autograd traced, no C++ build), so the tests stay fast on a CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from recursive_reasoning.core import network as network_module
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import CGAR, HRM, RSM, TRM
from strategies.base import Carry, Progress, RecursionStrategy

VOCAB, SEQ, BATCH = 6, 4, 3


def tiny(**overrides: object) -> NetworkConfig:
    """D 32, one layer: tracing cost only."""
    return NetworkConfig(**{"hidden_size": 32, "num_heads": 2, "num_layers": 1, "puzzle_emb_len": 2, **overrides})


CASES: dict[str, tuple[Callable[[], RecursionStrategy], NetworkConfig]] = {
    "trm_mlp": (lambda: TRM(cycles=2, latent_steps=2), tiny()),
    "trm_attention": (lambda: TRM(cycles=2, latent_steps=2), tiny(mixer="attention", positions="rope")),
    "hrm": (lambda: HRM(cycles=2, latent_steps=2), tiny(mixer="attention", positions="rope", shared=False,
                                                         puzzle_emb_len=1)),
    "cgar": (lambda: CGAR(cycles=3, latent_steps=3), tiny()),
    "rsm": (lambda: RSM(h_schedule=[(0.0, 2)], l_schedule=[(0.0, 2)], p_detach=0.5),
            tiny(token_mlp_norm="channels", tie_embeddings=True, halt_head=False, puzzle_emb_len=0)),
}


def batch() -> dict[str, torch.Tensor]:
    return {"inputs": torch.randint(0, VOCAB, (BATCH, SEQ)), "labels": torch.randint(1, VOCAB, (BATCH, SEQ)),
            "puzzle_ids": torch.arange(BATCH) % 2}


def carry_of(strategy: RecursionStrategy, net: ReasoningNetwork, data: dict[str, torch.Tensor]) -> Carry:
    return strategy.refresh(net, strategy.initial_carry(net, data), data)


def segment_of(strategy: RecursionStrategy) -> Callable[..., object]:
    """The function `run_segment` hands to `ReasoningNetwork.segment` (RSM's takes its host-side draw)."""
    if isinstance(strategy, RSM):
        return lambda net, carry, progress, training: strategy._drawn_segment(net, carry, progress, training, True)
    return strategy.segment


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_whole_segment_traces_with_no_graph_break(case: str, training: bool) -> None:
    torch.manual_seed(0)
    make, config = CASES[case]
    strategy, net = make(), ReasoningNetwork(config, VOCAB, SEQ, num_puzzle_ids=2)
    carry = carry_of(strategy, net, batch())
    explanation = torch._dynamo.explain(segment_of(strategy))(net, carry, Progress(5, 100), training)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.fixture
def counter(monkeypatch: pytest.MonkeyPatch) -> CompileCounterWithBackend:
    """`torch.compile` of the network's segments through a frame counter over the aot_eager backend."""
    count = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    monkeypatch.setattr(network_module.torch, "compile", functools.partial(torch.compile, backend=count))
    yield count
    torch._dynamo.reset()


def test_compile_segment_trains_like_eager_and_compiles_once(counter: CompileCounterWithBackend) -> None:
    torch.manual_seed(0)
    eager = ReasoningNetwork(tiny(), VOCAB, SEQ, num_puzzle_ids=2)
    compiled = ReasoningNetwork(tiny(compile="segment"), VOCAB, SEQ, num_puzzle_ids=2)
    compiled.load_state_dict(eager.state_dict())
    strategy, data = TRM(cycles=2, latent_steps=2, halt_exploration=0.0), batch()
    carries = [carry_of(strategy, net, data) for net in (eager, compiled)]
    for _ in range(3):
        outs = []
        for index, net in enumerate((eager, compiled)):
            net.zero_grad()
            out = strategy.run_segment(net, carries[index], Progress(0), training=True)
            strategy.loss(net, carries[index], out, Progress(0)).total.backward()
            carries[index] = strategy.refresh(net, strategy.advance(carries[index], out, True), data)
            outs.append(out)
        torch.testing.assert_close(outs[1].logits, outs[0].logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(outs[1].halt_logits, outs[0].halt_logits, rtol=1e-5, atol=1e-5)
        for (name, a), b in zip(eager.named_parameters(), compiled.parameters()):
            if a.grad is not None:
                torch.testing.assert_close(b.grad.to_dense(), a.grad.to_dense(), rtol=1e-4, atol=1e-5, msg=name)
    # first segment: initial (expanded) states; then refreshed ones: at most one more graph, never one per step
    assert 1 <= counter.frame_count <= 2


def test_a_curriculum_recompiles_per_stage_not_per_step(counter: CompileCounterWithBackend) -> None:
    net = ReasoningNetwork(tiny(compile="segment"), VOCAB, SEQ, num_puzzle_ids=2)
    strategy, data = CGAR(cycles=3, latent_steps=3, halt_exploration=0.0), batch()
    carry = carry_of(strategy, net, data)
    with torch.no_grad():
        for step in range(0, 100, 4):  # 25 steps over three stages
            out = strategy.run_segment(net, carry, Progress(step, 100), training=True)
            carry = strategy.refresh(net, strategy.advance(carry, out, True), data)
    assert counter.frame_count <= 5  # three stages, plus the initial states and one progress made dynamic


def test_compile_modes_are_checked_and_true_means_modules() -> None:
    assert ReasoningNetwork(tiny(compile=True), VOCAB, SEQ).compile_mode == "modules"
    plain = ReasoningNetwork(tiny(), VOCAB, SEQ)
    assert plain.compile_mode is None and plain.segment(len) is len  # uncompiled: the function itself
    with pytest.raises(ValueError, match="model.network.compile"):
        ReasoningNetwork(tiny(compile="everything"), VOCAB, SEQ)


def test_inductor_compiles_a_segment_whose_puzzle_table_has_a_sparse_gradient() -> None:
    """inductor cannot hold the puzzle table's sparse gradient (`Cannot access storage of SparseTensorImpl`): the rows
    are looked up outside the graph (`eager_lookups`), so the compiled backward returns their dense gradient and the
    table still gets its sparse one, equal to eager's."""
    try:
        network_module.check_compile_toolchain(torch.device("cpu"))
    except RuntimeError as error:
        pytest.skip(str(error))
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = ReasoningNetwork(tiny(), VOCAB, SEQ, num_puzzle_ids=2)
    compiled = ReasoningNetwork(tiny(compile="segment"), VOCAB, SEQ, num_puzzle_ids=2)
    compiled.load_state_dict(eager.state_dict())
    strategy, data = TRM(cycles=1, latent_steps=1, halt_exploration=0.0), batch()
    for net in (eager, compiled):
        carry = carry_of(strategy, net, data)
        out = strategy.run_segment(net, carry, Progress(0), training=True)
        strategy.loss(net, carry, out, Progress(0)).total.backward()
    table_grads = [net.puzzle_embedding.weight.grad for net in (eager, compiled)]
    assert all(grad.is_sparse for grad in table_grads)
    torch.testing.assert_close(table_grads[1].to_dense(), table_grads[0].to_dense(), rtol=1e-4, atol=1e-5)
    torch._dynamo.reset()
