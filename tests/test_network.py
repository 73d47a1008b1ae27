"""Network shapes, parameter counts against the reference configs, init and input checks."""

from __future__ import annotations

import math

import pytest
import torch

from recursive_reasoning.core.layers import rms_norm, swiglu_hidden, trunc_normal_
from recursive_reasoning.core.network import NetworkConfig, ReasoningNetwork
from strategies import TRM
from strategies.base import Progress


@pytest.mark.parametrize(
    ("config", "vocab", "seq_len", "expected"),
    [
        # TRM Sudoku MLP recipe: D 512, 2 layers, token mixing over 81 + 16 positions; "5.03M" in the paper.
        (NetworkConfig(), 11, 81, 5_028_866),
        # TRM attention at ARC size: vocab 12, 900 tokens, 16 prefix tokens; "6.83M".
        (NetworkConfig(mixer="attention", positions="rope"), 12, 900, 6_829_058),
        # HRM Sudoku: two separate 4-layer attention modules, 1 prefix token; exactly 27,275,266.
        (NetworkConfig(mixer="attention", positions="rope", num_layers=4, shared=False, puzzle_emb_len=1), 11, 81,
         27_275_266),
    ],
    ids=["trm_sudoku_mlp", "trm_arc_attention", "hrm_sudoku"],
)
def test_parameter_counts_match_reference(config: NetworkConfig, vocab: int, seq_len: int, expected: int) -> None:
    assert ReasoningNetwork(config, vocab, seq_len).num_parameters() == expected


def test_swiglu_hidden_rounds_up_to_256() -> None:
    assert swiglu_hidden(512, 4) == 1536
    assert swiglu_hidden(64, 4) == 256
    assert swiglu_hidden(97, 4) == 512  # the Sudoku token mixer: 81 cells + 16 prefix tokens


def test_shapes_and_heads() -> None:
    net = ReasoningNetwork(NetworkConfig(hidden_size=32, num_heads=4, mixer="attention", positions="rope"), 11, 16, 3)
    inputs = torch.randint(0, 11, (5, 16))
    x = net.embed(inputs, torch.tensor([0, 1, 2, 1, 0]))
    assert x.shape == (5, 32, 32)  # 16 prefix + 16 tokens
    y, z = net.initial_states(5)
    z = net.latent_step(z, y, x)
    y = net.answer_step(y, z)
    assert net.decode(y).shape == (5, 16, 11)
    assert net.halt_logits(y).shape == (5, 2)


def test_q_head_starts_at_minus_five_and_reads_position_zero() -> None:
    net = ReasoningNetwork(NetworkConfig(hidden_size=32, num_heads=4, puzzle_emb_len=0), 6, 9)
    y = torch.randn(3, 9, 32)
    assert torch.equal(net.halt_logits(y), torch.full((3, 2), -5.0))
    with torch.no_grad():
        net.q_head.weight.normal_()
    changed = y.clone()
    changed[:, 1:] += 1.0
    assert torch.equal(net.halt_logits(y), net.halt_logits(changed))


def test_puzzle_embedding_fills_only_the_first_prefix_token() -> None:
    net = ReasoningNetwork(NetworkConfig(hidden_size=8, num_heads=2, puzzle_emb_len=4), 5, 6, num_puzzle_ids=2)
    with torch.no_grad():
        net.puzzle_embedding.weight.fill_(1.0)
    x = net.embed(torch.zeros(1, 6, dtype=torch.long), torch.tensor([1]))
    assert torch.allclose(x[0, 0], torch.full((8,), math.sqrt(8)))
    assert torch.equal(x[0, 1:4], torch.zeros(3, 8))


def test_token_mixer_norm_is_over_positions() -> None:
    net = ReasoningNetwork(NetworkConfig(hidden_size=16, num_layers=1, puzzle_emb_len=0), 5, 9)
    block = net.latent_module.blocks[0]
    h = torch.randn(2, 9, 16)
    t = h.transpose(1, 2)
    expected = rms_norm(t + block.mix(t)).transpose(1, 2)
    expected = rms_norm(expected + block.mlp(expected))
    assert torch.allclose(block(h), expected)


def test_trunc_normal_has_the_requested_std_and_bounds() -> None:
    torch.manual_seed(0)
    t = trunc_normal_(torch.empty(200_000), std=0.5)
    assert abs(t.std().item() - 0.5) < 0.01
    # Truncation is at +-2 of the compensated std: std / sqrt(var of N(0,1) truncated at +-2 = 0.77371).
    assert t.abs().max().item() <= 2 * 0.5 / math.sqrt(0.77371) + 1e-6


def test_rms_norm_returns_input_dtype_and_unit_rms() -> None:
    x = torch.randn(4, 7, 32, dtype=torch.bfloat16)
    out = rms_norm(x)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float().square().mean(-1), torch.ones(4, 7), atol=2e-2)


def test_wrong_input_length_is_rejected() -> None:
    net = ReasoningNetwork(NetworkConfig(hidden_size=16, num_heads=2, puzzle_emb_len=0), 11, 81)
    with pytest.raises(ValueError, match="length 80.*built for 81"):
        net.embed(torch.zeros(2, 80, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_bad_architecture_choices_are_rejected() -> None:
    with pytest.raises(ValueError, match="rope.*attention"):
        ReasoningNetwork(NetworkConfig(mixer="mlp", positions="rope"), 11, 81)
    with pytest.raises(ValueError, match="not divisible"):
        ReasoningNetwork(NetworkConfig(hidden_size=30, num_heads=4, mixer="attention"), 11, 81)


def test_token_mixer_norm_over_channels_for_rsm() -> None:
    net = ReasoningNetwork(NetworkConfig(hidden_size=16, num_layers=1, puzzle_emb_len=0, token_mlp_norm="channels"),
                           5, 9)
    block = net.latent_module.blocks[0]
    h = torch.randn(2, 9, 16)
    expected = rms_norm(h + block.mix(h.transpose(1, 2)).transpose(1, 2))
    expected = rms_norm(expected + block.mlp(expected))
    assert torch.allclose(block(h), expected)
    with pytest.raises(ValueError, match="token_mlp_norm 'rows'.*'positions'.*'channels'"):
        ReasoningNetwork(NetworkConfig(hidden_size=16, token_mlp_norm="rows"), 5, 9)  # type: ignore[arg-type]


def tied_net(seed: int = 0) -> ReasoningNetwork:
    torch.manual_seed(seed)
    return ReasoningNetwork(NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=2,
                                          tie_embeddings=True, halt_head=False), 6, 9, num_puzzle_ids=3)


def test_tied_output_head_is_the_token_embedding_in_counts_state_dict_and_optimiser() -> None:
    net = tied_net()
    assert net.lm_head.weight is net.token_embedding.weight
    torch.manual_seed(0)
    untied = ReasoningNetwork(NetworkConfig(hidden_size=16, num_heads=2, num_layers=1, puzzle_emb_len=2), 6, 9, 3)
    assert torch.equal(net.token_embedding.weight, untied.token_embedding.weight)  # the embedding's init survives
    q_head = 2 * 16 + 2
    assert net.num_parameters() == untied.num_parameters() - 6 * 16 - q_head
    names = [name for name, _ in net.named_parameters()]
    assert "token_embedding.weight" in names and "lm_head.weight" not in names and len(names) == len(set(names))

    state = net.state_dict()
    assert state.keys() >= {"token_embedding.weight", "lm_head.weight"} and not any("q_head" in k for k in state)
    other = tied_net(seed=1)
    other.load_state_dict(state)
    assert other.lm_head.weight is other.token_embedding.weight
    assert torch.equal(other.lm_head.weight, net.token_embedding.weight)
    y = torch.randn(3, net.num_positions, 16)
    assert torch.equal(net.decode(y), y[:, 2:] @ net.token_embedding.weight.T)

    from recursive_reasoning.module import OptimConfig, RecursiveReasoner
    from strategies import RSM

    model = RecursiveReasoner(RSM(h_schedule=[(0.0, 2)], l_schedule=[(0.0, 1)]), net.config, OptimConfig(),
                              vocab_size=6, seq_len=9, num_puzzle_ids=3)
    members = model.configure_optimizers()["optimizer"].optimizers
    params = [p for optimizer in members for group in optimizer.param_groups for p in group["params"]]
    assert len(params) == len({id(p) for p in params}) == len(list(model.net.parameters()))


def test_ema_average_of_a_tied_network_stays_tied() -> None:
    net = tied_net()
    average = torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.5))
    assert average.module.lm_head.weight is average.module.token_embedding.weight
    for _ in range(2):  # the first update copies, the second averages: current - 0.5
        with torch.no_grad():
            net.token_embedding.weight.add_(1.0)
        average.update_parameters(net)
    assert average.module.lm_head.weight is average.module.token_embedding.weight
    assert torch.allclose(average.module.lm_head.weight, net.token_embedding.weight - 0.5)


def test_without_halt_head_the_halt_logits_are_zeros() -> None:
    net = tied_net()
    assert net.q_head is None and not any(name.startswith("q_head") for name, _ in net.named_parameters())
    y = torch.randn(3, net.num_positions, 16, dtype=torch.float64, requires_grad=True)
    logits = net.halt_logits(y)
    assert logits.dtype == torch.float32 and torch.equal(logits, torch.zeros(3, 2)) and not logits.requires_grad


def bf16_segment(forward_dtype: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, z, logits) of one TRM training segment under bf16 autocast, the network carrying `forward_dtype`."""
    torch.manual_seed(0)
    net = ReasoningNetwork(NetworkConfig(hidden_size=32, num_layers=1, puzzle_emb_len=2, forward_dtype=forward_dtype),
                           6, 4, 2)
    strategy = TRM(cycles=2, latent_steps=2)
    data = {"inputs": torch.randint(0, 6, (3, 4)), "labels": torch.randint(1, 6, (3, 4)),
            "puzzle_ids": torch.tensor([0, 1, 0])}
    carry = strategy.refresh(net, strategy.initial_carry(net, data), data)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = strategy.run_segment(net, carry, Progress(0), training=True)
    return out.y, out.z, out.logits


def test_forward_dtype_bfloat16_carries_bf16_states_close_to_fp32() -> None:
    y16, z16, logits16 = bf16_segment("bfloat16")
    y32, z32, logits32 = bf16_segment("float32")
    assert y16.dtype == z16.dtype == torch.bfloat16
    assert y32.dtype == z32.dtype == torch.float32  # bf16-mixed promotes the residual adds and RMSNorm to fp32
    assert logits16.dtype == torch.float32
    assert torch.allclose(logits16, logits32, atol=0.1), (logits16 - logits32).abs().max()


def test_forward_dtype_bfloat16_runs_without_autocast_and_rejects_unknown_dtypes() -> None:
    net = ReasoningNetwork(NetworkConfig(hidden_size=32, num_layers=1, forward_dtype="bfloat16"), 6, 4)
    y, z = net.initial_states(2)
    x = net.embed(torch.randint(0, 6, (2, 4)), torch.zeros(2, dtype=torch.long))
    y = net.answer_step(y, net.latent_step(z, y, x))  # fp32 weights cast to the bf16 states, as the reference does
    assert y.dtype == torch.bfloat16 and net.decode(y).dtype == torch.float32
    with pytest.raises(ValueError, match="forward_dtype"):
        ReasoningNetwork(NetworkConfig(hidden_size=32, forward_dtype="float16"), 6, 4)
