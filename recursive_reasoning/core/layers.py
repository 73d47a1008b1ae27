"""Building blocks of the reasoning network: norm, SwiGLU, attention with RoPE, token mixing, post-norm blocks.

Everything here follows section 2 of the reference spec: no biases, weightless RMSNorm in fp32, LeCun truncated-normal
init, fused QKV and fused gate/up projections (so reference weights map one-to-one).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

Mixer = Literal["attention", "mlp"]
Positions = Literal["rope", "learned", "none"]
TokenMLPNorm = Literal["positions", "channels"]
AttentionBackend = Literal["auto", "math", "flash", "efficient", "cudnn"]
ATTENTION_BACKENDS: dict[str, SDPBackend | None] = {
    "auto": None,
    "math": SDPBackend.MATH,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}


def sdpa_backend(name: str) -> SDPBackend | None:
    """The SDPA kernel named by `attention_backend` (None for 'auto'); a clear error for an unknown name."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(
            f"unknown attention_backend {name!r} (model.network.attention_backend); choose one of "
            f"{', '.join(repr(k) for k in ATTENTION_BACKENDS)}."
        )
    return ATTENTION_BACKENDS[name]


def trunc_normal_(tensor: Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> Tensor:
    """Fill `tensor` from a normal truncated at [lower, upper] sigmas, rescaled so its std really is `std`."""
    if std == 0:
        return tensor.zero_()
    sqrt2 = math.sqrt(2.0)
    cdf_lo, cdf_hi = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
    z = (cdf_hi - cdf_lo) / 2
    pdf_lo = math.exp(-0.5 * lower**2) / math.sqrt(2 * math.pi)
    pdf_hi = math.exp(-0.5 * upper**2) / math.sqrt(2 * math.pi)
    var = 1 - (upper * pdf_hi - lower * pdf_lo) / z - ((pdf_hi - pdf_lo) / z) ** 2
    scale = std / math.sqrt(var)
    with torch.no_grad():
        tensor.uniform_(cdf_lo, cdf_hi)
        tensor.erfinv_().mul_(sqrt2 * scale).clamp_(lower * scale, upper * scale)
    return tensor


class CastLinear(nn.Linear):
    """nn.Linear that runs in its input's dtype: bf16 states (`forward_dtype`) against fp32 weights outside autocast
    cast the weights, as the reference's CastedLinear does; same dtypes or autocast run nn.Linear unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == self.weight.dtype or torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


def lecun_linear(in_features: int, out_features: int) -> CastLinear:
    """Bias-free linear layer initialised truncated-normal with std 1/sqrt(fan_in)."""
    layer = CastLinear(in_features, out_features, bias=False)
    trunc_normal_(layer.weight, std=1.0 / math.sqrt(in_features))
    return layer


def rms_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Weightless RMSNorm over the last axis, computed in fp32 and returned in the input dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + eps)
    return h.to(x.dtype)


def records_grad(*tensors: Tensor) -> bool:
    """Whether autograd records an op on these tensors (eager only: a compiled graph is left to the compiler)."""
    return torch.compiler.is_compiling() or (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


def residual_rms_norm(h: Tensor, update: Tensor, eps: float = 1e-5) -> Tensor:
    """rms_norm(h + update): the same arithmetic, with the scaling done in place when no gradient is recorded (fp32),
    which saves a state-sized buffer per call (on a CPU every fresh large buffer is page-faulted in)."""
    if records_grad(h, update) or h.dtype != torch.float32 or update.dtype != torch.float32:
        return rms_norm(h + update, eps)
    out = h + update
    return out.mul_(torch.rsqrt(out.square().mean(-1, keepdim=True).add_(eps)))


class _SwiGLUActivation(torch.autograd.Function):
    """silu(gate) * up of a fused [..., 2H] gate/up projection, with the gradient written into one [..., 2H] buffer
    (autograd's chunk backward would concatenate two halves). Same saved tensors and arithmetic as autograd's."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, gate_up: Tensor) -> Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        activated = F.silu(gate)
        ctx.save_for_backward(gate_up, activated)
        return activated * up

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        gate_up, activated = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        grad_gate_up = torch.empty_like(gate_up, memory_format=torch.contiguous_format)
        grad_gate, grad_up = grad_gate_up.chunk(2, dim=-1)
        torch.mul(grad, up, out=grad_gate)
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        torch.mul(grad, activated, out=grad_up)
        return grad_gate_up


def swiglu_activation(gate_up: Tensor) -> Tensor:
    """silu(gate) * up over the two halves of the last axis; in place into `gate_up` when no gradient is recorded."""
    if torch.compiler.is_compiling():
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up
    if records_grad(gate_up):
        return _SwiGLUActivation.apply(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate, inplace=True).mul_(up)


def swiglu_hidden(width: int, expansion: float) -> int:
    """SwiGLU inner width: expansion * width * 2/3, rounded up to a multiple of 256 (512, 4 -> 1536)."""
    base = round(expansion * width * 2 / 3)
    return -(-base // 256) * 256


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) with the gate and up projections fused in one matrix."""

    def __init__(self, width: int, expansion: float) -> None:
        super().__init__()
        hidden = swiglu_hidden(width, expansion)
        self.gate_up = lecun_linear(width, 2 * hidden)
        self.down = lecun_linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(swiglu_activation(self.gate_up(x)))


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE tables for every position of the sequence, prefix tokens included."""

    def __init__(self, head_dim: int, num_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(num_positions, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # [S, head_dim]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate queries and keys laid out [B, S, H, head_dim], in fp32."""
        cos, sin = self.cos[:, None, :], self.sin[:, None, :]  # [S, 1, hd]

        def rotate(t: Tensor) -> Tensor:
            t32 = t.float()
            first, second = t32.chunk(2, dim=-1)
            return (t32 * cos + torch.cat([-second, first], dim=-1) * sin).to(t.dtype)

        return rotate(q), rotate(k)


class Attention(nn.Module):
    """Non-causal multi-head self-attention with a fused QKV projection, run by PyTorch SDPA.

    Args:
        width: Model width D.
        num_heads: Attention heads (head_dim = D / num_heads).
        rotary: Shared RoPE tables, or None.
        backend: SDPA kernel ('auto', 'math', 'flash', 'efficient', 'cudnn'); 'auto' lets PyTorch pick.
    """

    def __init__(self, width: int, num_heads: int, rotary: RotaryEmbedding | None, backend: str = "auto") -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"hidden_size {width} is not divisible by num_heads {num_heads}; pick sizes that divide.")
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.qkv = lecun_linear(width, 3 * width)
        self.out = lecun_linear(width, width)
        self.rotary = rotary
        self.backend_name = backend
        self.backend = sdpa_backend(backend)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """SDPA over [B, H, S, hd] under the configured kernel; a kernel that cannot run names the option."""
        if self.backend is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=False)
        try:
            with sdpa_kernel(self.backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=False)
        except RuntimeError as error:
            raise RuntimeError(
                f"model.network.attention_backend={self.backend_name!r} cannot run on this device "
                f"({q.device.type}, {q.dtype}, head_dim {q.shape[-1]}); use 'auto' or another kernel. "
                f"PyTorch said: {error}"
            ) from error

    def forward(self, x: Tensor) -> Tensor:
        B, S, D = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.num_heads, self.head_dim).unbind(dim=2)  # each [B, S, H, hd]
        if self.rotary is not None:
            q, k = self.rotary(q, k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, H, S, hd]
        h = self.attend(q, k, v)
        return self.out(h.transpose(1, 2).reshape(B, S, D))


class Block(nn.Module):
    """Post-norm block: h = norm(h + mix(h)); h = norm(h + swiglu(h)).

    With token-MLP mixing the first norm is taken over the position axis (`token_mlp_norm='positions'`, TRM's `mlp_t`
    block) or over channels (`'channels'`, RSM's block, which adds the mixer output back in [B, S, D] layout).
    """

    def __init__(
        self,
        width: int,
        num_positions: int,
        mixer: Mixer,
        num_heads: int,
        expansion: float,
        eps: float,
        rotary: RotaryEmbedding | None,
        attention_backend: str = "auto",
        token_mlp_norm: TokenMLPNorm = "positions",
    ) -> None:
        super().__init__()
        if token_mlp_norm not in ("positions", "channels"):
            raise ValueError(
                f"unknown token_mlp_norm {token_mlp_norm!r}; choose 'positions' (TRM) or 'channels' (RSM)."
            )
        self.eps = eps
        self.mixer_kind = mixer
        self.norm_over_positions = token_mlp_norm == "positions"
        if mixer == "attention":
            self.mix: nn.Module = Attention(width, num_heads, rotary, attention_backend)
        elif mixer == "mlp":
            self.mix = SwiGLU(num_positions, expansion)  # acts along the sequence axis
        else:
            raise ValueError(f"unknown mixer {mixer!r}; choose 'attention' or 'mlp'.")
        self.mlp = SwiGLU(width, expansion)

    def forward(self, h: Tensor) -> Tensor:
        if self.mixer_kind == "mlp" and self.norm_over_positions:
            t = h.transpose(1, 2)  # [B, D, S]
            h = residual_rms_norm(t, self.mix(t), self.eps).transpose(1, 2)  # token mixing; norm over positions
        elif self.mixer_kind == "mlp":
            h = residual_rms_norm(h, self.mix(h.transpose(1, 2)).transpose(1, 2), self.eps)  # norm over channels
        else:
            h = residual_rms_norm(h, self.mix(h), self.eps)
        return residual_rms_norm(h, self.mlp(h), self.eps)


class ReasoningModule(nn.Module):
    """A stack of blocks applied as f(state, injection) = blocks(state + injection)."""

    def __init__(self, blocks: list[Block]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, state: Tensor, injection: Tensor) -> Tensor:
        h = state + injection
        for block in self.blocks:
            h = block(h)
        return h
