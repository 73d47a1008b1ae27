"""The benchmark's FLOP counter, and the hot-path options: compile, attention_backend, the in-place/fused layers.

Never timed: `benchmarks/throughput.py` measures speed; these check what it counts and that the options build and run.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from recursive_reasoning.flops import call_flops, segment_flops
from recursive_reasoning.core.layers import SwiGLU, residual_rms_norm, rms_norm, swiglu_hidden
from recursive_reasoning.module import RecursiveReasoner
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import TRM, Progress


def _load_throughput():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"
    spec = importlib.util.spec_from_file_location("throughput_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


throughput = _load_throughput()


def tiny_mlp(**overrides) -> NetworkConfig:
    return NetworkConfig(hidden_size=8, num_heads=2, num_layers=1, mixer="mlp", puzzle_emb_len=0, **overrides)


def tiny_attention(**overrides) -> NetworkConfig:
    return NetworkConfig(hidden_size=8, num_heads=2, num_layers=1, mixer="attention", positions="rope",
                         puzzle_emb_len=2, **overrides)


def segment(net: ReasoningNetwork, strategy: TRM, training: bool, size: int = 2) -> None:
    g = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randint(1, net.vocab_size, (size, net.seq_len), generator=g),
             "labels": torch.randint(1, net.vocab_size, (size, net.seq_len), generator=g),
             "puzzle_ids": torch.zeros(size, dtype=torch.long)}
    carry = strategy.refresh(net, strategy.initial_carry(net, batch), batch)
    out = strategy.run_segment(net, carry, Progress(0), training=training)
    if training:
        strategy.loss(net, carry, out, Progress(0)).total.backward()


def test_flop_counter_equals_a_hand_count() -> None:
    # D 8, S 4, one block: token SwiGLU (hidden 256) over the 8 channels, channel SwiGLU (hidden 256) over 4 positions.
    net = ReasoningNetwork(tiny_mlp(), vocab_size=6, seq_len=4)
    hidden = swiglu_hidden(4, 4.0)
    assert hidden == swiglu_hidden(8, 4.0) == 256
    per_call = (2 * 8 * 4 * 512 + 2 * 8 * 256 * 4) + (2 * 4 * 8 * 512 + 2 * 4 * 256 * 8)
    heads = 2 * 4 * 8 * 6 + 2 * 1 * 8 * 2  # lm_head over 4 positions, q_head on one
    assert call_flops(net) == per_call == 98_304
    strategy = TRM(cycles=2, latent_steps=1)  # 4 calls, the last 2 with gradient
    train = segment_flops(net, strategy, Progress(0), training=True)
    assert (train["calls"], train["calls_with_grad"]) == (4, 2)
    assert train["forward"] == 4 * per_call + heads
    assert train["backward"] == 2 * (2 * per_call + heads)
    assert train["total"] == 787_680
    assert segment_flops(net, strategy, Progress(0), training=False)["total"] == 4 * per_call + heads

    attention = ReasoningNetwork(tiny_attention(), vocab_size=6, seq_len=4)  # S = 2 prefix + 4 tokens
    s, d = 6, 8
    expected = 2 * s * d * 3 * d + 2 * s * d * d + 2 * (2 * s * s * d) + (2 * s * d * 512 + 2 * s * 256 * d)
    assert call_flops(attention) == expected


@pytest.mark.parametrize("training", [True, False])
def test_flop_counter_agrees_with_torch_flop_counter_on_the_mlp_recipe(training: bool) -> None:
    torch.manual_seed(0)
    net = ReasoningNetwork(tiny_mlp(), vocab_size=6, seq_len=4)
    strategy = TRM(cycles=2, latent_steps=2)
    counter = FlopCounterMode(display=False)
    with counter:
        segment(net, strategy, training, size=3)
    assert counter.get_total_flops() == 3 * segment_flops(net, strategy, Progress(0), training)["total"]


def test_flop_counter_agrees_with_torch_on_an_attention_forward() -> None:
    torch.manual_seed(0)  # the math kernel runs as bmm, which FlopCounterMode counts (not the CPU flash kernel)
    net = ReasoningNetwork(tiny_attention(attention_backend="math"), vocab_size=6, seq_len=4)
    strategy = TRM(cycles=1, latent_steps=2)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        segment(net, strategy, training=False, size=2)
    assert counter.get_total_flops() == 2 * segment_flops(net, strategy, Progress(0), False)["total"]


def test_presets_load_with_the_documented_sizes() -> None:
    recipe = throughput.load_recipe("trm_sudoku")
    net = ReasoningNetwork(recipe.network, recipe.vocab_size, recipe.seq_len)
    assert net.num_parameters() == 5_028_866 and (recipe.vocab_size, recipe.seq_len) == (11, 81)
    flops = segment_flops(net, recipe.strategy, Progress(0), training=True)
    assert (flops["calls"], flops["calls_with_grad"]) == (21, 7)
    demo = throughput.load_recipe("demo")
    assert (demo.vocab_size, demo.seq_len, demo.network.hidden_size) == (8, 36, 64)


def test_unknown_attention_backend_raises() -> None:
    with pytest.raises(ValueError, match="attention_backend"):
        ReasoningNetwork(tiny_mlp(attention_backend="fastest"), vocab_size=6, seq_len=4)


def test_attention_backends_run_a_forward_on_cpu() -> None:
    torch.manual_seed(0)
    reference = ReasoningNetwork(tiny_attention(), vocab_size=6, seq_len=4)
    x = reference.embed(torch.randint(1, 6, (2, 4)), torch.zeros(2, dtype=torch.long))
    y, z = reference.initial_states(2)
    expected = reference.latent_step(z, y, x)
    for backend in ("math", "flash"):
        net = ReasoningNetwork(tiny_attention(attention_backend=backend), vocab_size=6, seq_len=4)
        net.load_state_dict(reference.state_dict())
        assert torch.allclose(net.latent_step(z, y, x), expected, atol=1e-5), backend


def test_a_backend_the_device_cannot_run_names_the_option() -> None:
    net = ReasoningNetwork(tiny_attention(attention_backend="efficient"), vocab_size=6, seq_len=4)
    y, z = net.initial_states(2)
    x = net.embed(torch.randint(1, 6, (2, 4)), torch.zeros(2, dtype=torch.long))
    if torch.cuda.is_available():
        pytest.skip("checks the CPU")
    with pytest.raises(RuntimeError, match="attention_backend='efficient'"):
        net.latent_step(z, y, x)


def test_options_are_hyperparameters_and_compile_keeps_state_dict_keys() -> None:
    config = tiny_mlp(compile=True, attention_backend="math")
    model = RecursiveReasoner(TRM(cycles=1, latent_steps=1), config, vocab_size=6, seq_len=4)
    assert model.hparams["network"]["compile"] is True
    assert model.hparams["network"]["attention_backend"] == "math"
    assert NetworkConfig(**asdict(config)) == config
    plain = ReasoningNetwork(tiny_mlp(), vocab_size=6, seq_len=4)
    assert list(model.net.state_dict()) == list(plain.state_dict())  # no _orig_mod. prefix


def test_fused_and_in_place_swiglu_match_the_plain_formula_bit_for_bit() -> None:
    torch.manual_seed(0)
    mlp = SwiGLU(16, 4.0)
    x = torch.randn(3, 5, 16, requires_grad=True)

    def plain(x: torch.Tensor) -> torch.Tensor:
        gate, up = mlp.gate_up(x).chunk(2, dim=-1)
        return mlp.down(torch.nn.functional.silu(gate) * up)

    expected = plain(x)
    expected.square().sum().backward()
    grads = [p.grad.clone() for p in (x, *mlp.parameters())]
    for p in (x, *mlp.parameters()):
        p.grad = None
    out = mlp(x)
    out.square().sum().backward()
    assert torch.equal(out, expected)
    assert all(torch.equal(p.grad, g) for p, g in zip((x, *mlp.parameters()), grads))
    with torch.no_grad():
        assert torch.equal(mlp(x), expected)


def test_in_place_residual_norm_matches_the_plain_formula_bit_for_bit() -> None:
    torch.manual_seed(0)
    h, update = torch.randn(3, 7, 16), torch.randn(3, 7, 16)
    expected = rms_norm(h + update)
    with torch.no_grad():
        assert torch.equal(residual_rms_norm(h, update), expected)
        assert torch.equal(residual_rms_norm(h.transpose(1, 2), update.transpose(1, 2)),
                           rms_norm(h.transpose(1, 2) + update.transpose(1, 2)))
    out = residual_rms_norm(h.requires_grad_(True), update)  # the autograd path
    assert out.requires_grad and torch.equal(out, expected)


@pytest.mark.slow
def test_compile_runs_a_forward_on_cpu() -> None:
    torch.manual_seed(0)
    plain = ReasoningNetwork(tiny_mlp(), vocab_size=6, seq_len=4)
    compiled = ReasoningNetwork(tiny_mlp(compile=True), vocab_size=6, seq_len=4)
    compiled.load_state_dict(plain.state_dict())
    x = plain.embed(torch.randint(1, 6, (2, 4)), torch.zeros(2, dtype=torch.long))
    y, z = plain.initial_states(2)
    with torch.no_grad():
        assert torch.allclose(compiled.latent_step(z, y, x), plain.latent_step(z, y, x), atol=1e-5)


def test_one_configuration_runs_and_reports_its_counts() -> None:
    spec = throughput.Spec("demo", batch=4, micro_batch=2, steps=1, eval_segments=2)
    result = throughput.run_spec(spec)
    train, evaluation = result["train"], result["eval"]
    assert result["parameters"] == 154_754
    assert (train["calls"], train["calls_with_grad"]) == (6, 3)  # TRM T 2, n 2: 2 cycles of (2 latent + 1 answer)
    assert evaluation["segments"] == 2
    assert train["flops_per_s"] > 0 and evaluation["flops_per_s"] > 0
    assert train["peak_memory"] > 0 and result["baseline_memory"] > 0  # ru_maxrss lags current RSS: no ordering
