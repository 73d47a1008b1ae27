"""Analytic matmul FLOPs of the recursion, counted from the layer shapes (one multiply-add = 2 FLOPs).

Training logs the cumulative count as `train/flops`, so methods can be compared at equal compute; the benchmarks
(`benchmarks/throughput.py`, `benchmarks/cost_table.py`) use the same counter for MFU and cost tables. Only matmuls
are counted (projections, SwiGLUs, attention scores and values, the heads): norms, embeddings and the loss are
negligible at these shapes. `tests/test_throughput.py` checks the count against torch's FlopCounterMode.
"""

from __future__ import annotations

from typing import Any

import torch

from recursive_reasoning.core.layers import Attention, ReasoningModule, SwiGLU
from recursive_reasoning.core.network import ReasoningNetwork
from strategies.base import Progress, RecursionStrategy, SegmentOutput

__all__ = ["call_flops", "head_flops", "linear_flops", "module_call_flops", "segment_flops", "swiglu_flops"]


def linear_flops(layer: torch.nn.Linear, rows: int) -> int:
    """FLOPs of a linear layer applied to `rows` vectors: 2 * rows * in * out."""
    return 2 * rows * layer.in_features * layer.out_features


def swiglu_flops(mlp: SwiGLU, rows: int) -> int:
    """Fused gate/up projection and down projection of a SwiGLU applied to `rows` vectors."""
    return linear_flops(mlp.gate_up, rows) + linear_flops(mlp.down, rows)


def module_call_flops(module: ReasoningModule, positions: int, width: int) -> int:
    """Matmul FLOPs of one call of a reasoning module on one example of `positions` tokens of width `width`.

    Attention: QKV and output projections over the positions, plus scores (Q K^T) and values (P V), 2 * S * S * D
    each. Token-MLP mixing: a SwiGLU along the positions, applied to each of the D channels. Then the channel SwiGLU
    over the positions.
    """
    total = 0
    for block in module.blocks:
        if isinstance(block.mix, Attention):
            total += linear_flops(block.mix.qkv, positions) + linear_flops(block.mix.out, positions)
            total += 2 * (2 * positions * positions * width)
        else:
            total += swiglu_flops(block.mix, width)
        total += swiglu_flops(block.mlp, positions)
    return total


def head_flops(net: ReasoningNetwork) -> int:
    """lm_head over the L answer positions and q_head (when the network has one) on the first position, one example."""
    halt = linear_flops(net.q_head, 1) if net.q_head is not None else 0
    return linear_flops(net.lm_head, net.seq_len) + halt


def call_flops(net: ReasoningNetwork) -> int:
    """FLOPs of one module call per example; the latent and the answer module must cost the same."""
    per_call = {module_call_flops(m, net.num_positions, net.hidden_size) for m in net.reasoning_modules()}
    if len(per_call) != 1:
        raise ValueError("the analytic counter assumes latent and answer modules of equal cost (same layers)")
    return per_call.pop()


def segment_flops(net: ReasoningNetwork, strategy: RecursionStrategy, progress: Progress, training: bool,
                  per_call: int | None = None, segment: SegmentOutput | None = None) -> dict[str, Any]:
    """Matmul FLOPs of one segment for one example: forward of every module call and of the heads, and in training
    a backward of 2x the forward for the calls with gradient and the heads (`strategy.module_calls`, or with
    `segment`, a segment that ran, the window it drew: `strategy.calls_made`).

    A strategy with a `continue_target` (HRM's Q-learning continue loss) runs one more segment forward without
    gradient in training; it is counted. `per_call` skips recounting `call_flops(net)` (fixed for a network).
    """
    if segment is None:
        calls, with_grad = strategy.module_calls(progress, training)
    else:
        calls, with_grad = strategy.calls_made(segment, progress, training)
    per_call, heads = call_flops(net) if per_call is None else per_call, head_flops(net)
    forward = calls * per_call + heads
    backward = 2 * (with_grad * per_call + heads) if training else 0
    if training and hasattr(strategy, "continue_target"):
        forward += calls * per_call + heads
    return {"calls": calls, "calls_with_grad": with_grad if training else 0, "forward": forward,
            "backward": backward, "total": forward + backward}
