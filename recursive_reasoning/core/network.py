"""The reasoning network: embeddings, the latent and answer update modules, and the two heads.

The network knows shapes and layers only. How often `latent_step` and `answer_step` are called, and which calls
carry gradient, is decided by a `strategies.RecursionStrategy`; halting is decided there too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recursive_reasoning.core.layers import (
    AttentionBackend,
    Block,
    CastLinear,
    Mixer,
    Positions,
    ReasoningModule,
    RotaryEmbedding,
    TokenMLPNorm,
    lecun_linear,
    sdpa_backend,
    trunc_normal_,
)


def _compile_errors() -> tuple[type[BaseException], ...]:
    """Exception types torch.compile raises when a backend fails to compile (names vary across releases)."""
    errors: list[type[BaseException]] = []
    try:
        from torch._dynamo.exc import BackendCompilerFailed

        errors.append(BackendCompilerFailed)
    except ImportError:
        pass
    try:
        from torch._inductor.exc import InductorError

        errors.append(InductorError)
    except ImportError:
        pass
    return tuple(errors)


COMPILE_ERRORS = _compile_errors()
Compile = Literal[False, True, "modules", "segment"]
ForwardDtype = Literal["float32", "bfloat16"]
FORWARD_DTYPES: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}  # None: as the weights
SEGMENT_RECOMPILE_LIMIT = 64  # graphs per segment function: one per depth a curriculum reaches, grad mode and shape
Result = TypeVar("Result")


PUZZLE_ROWS = "puzzle_rows"  # the batch key of `ReasoningNetwork.eager_lookups`


def check_compile_toolchain(device: torch.device) -> None:
    """Fail with a clear message when torch.compile's inductor backend cannot build CPU kernels (no C++ compiler),
    rather than at the first call deep inside the compiler."""
    if device.type != "cpu":
        return
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # another torch layout: the compile call itself reports a missing toolchain
        return
    try:
        get_cpp_compiler()
    except Exception as error:
        raise RuntimeError(
            "model.network.compile on a CPU needs a C++ compiler for torch.compile's inductor backend, and "
            f"none was found ({type(error).__name__}: {error}). Install g++ (or set CXX), or set "
            "model.network.compile=false."
        ) from error


@dataclass
class NetworkConfig:
    """Architecture hyperparameters (the task's vocabulary and length come from the data module).

    Args:
        hidden_size: Width D of every token state.
        num_heads: Attention heads (head_dim = hidden_size / num_heads); unused with token-MLP mixing.
        expansion: SwiGLU expansion factor; the inner width is expansion * width * 2/3 rounded up to 256.
        num_layers: Blocks in the latent-update module (and in the answer module when shared).
        answer_layers: Blocks in a separate answer-update module; None uses num_layers.
        shared: One module for both the latent and the answer update (TRM) or two separate ones (HRM).
        mixer: Sequence mixing: 'attention' (SDPA) or 'mlp' (SwiGLU along the sequence axis).
        positions: Position encoding: 'rope', 'learned' or 'none'.
        puzzle_emb_len: Prefix tokens that carry the puzzle embedding (TRM 16, HRM 1); 0 disables it.
        puzzle_emb_dim: Width of the puzzle-embedding vector (spread over the prefix tokens); None means hidden_size.
        rms_norm_eps: Epsilon of the weightless RMSNorm.
        rope_theta: RoPE base.
        compile: `torch.compile` (inductor; on a CPU it needs a C++ compiler): False; 'modules' (or true) compiles
            the latent and answer modules in place; 'segment' compiles each whole supervision segment a strategy runs
            (embedding, every recursion step, both heads: `RecursionStrategy.run_segment`) as one graph with
            fullgraph=True, as the reference compiles its model. Weights and state_dict keys are unchanged; the first
            calls (and each new depth, batch shape or gradient mode) pay the compilation.
        forward_dtype: dtype of the carried recursion states y, z and of the embedded input x: 'float32' (the
            weights' dtype, so bf16 under precision bf16-true), or 'bfloat16' as the reference carries them (the
            linear layers then run in bf16 with or without autocast; RMSNorm still computes in fp32). Under
            bf16-mixed with 'float32', the residual adds and RMSNorm promote the states to fp32.
        attention_backend: SDPA kernel of the attention mixer: 'auto' (PyTorch picks), 'math', 'flash', 'efficient'
            or 'cudnn'. A kernel the device, dtype or shapes cannot run raises at the first attention call.
        token_mlp_norm: Axis of the norm after token-MLP mixing: 'positions' (TRM's `mlp_t` block) or 'channels'
            (RSM's block).
        tie_embeddings: The output head reuses the token-embedding matrix (one parameter, the embedding's init), as
            RSM does.
        halt_head: Build the Q head (halt / continue logits); without it (RSM) `halt_logits` returns zeros.
    """

    hidden_size: int = 512
    num_heads: int = 8
    expansion: float = 4.0
    num_layers: int = 2
    answer_layers: int | None = None
    shared: bool = True
    mixer: Mixer = "mlp"
    positions: Positions = "none"
    puzzle_emb_len: int = 16
    puzzle_emb_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    compile: Compile = False
    forward_dtype: ForwardDtype = "float32"
    attention_backend: AttentionBackend = "auto"
    token_mlp_norm: TokenMLPNorm = "positions"
    tie_embeddings: bool = False
    halt_head: bool = True


class ReasoningNetwork(nn.Module):
    """Embeds a batch, updates latent and answer states, and decodes answers and halt logits.

    Args:
        config: Architecture hyperparameters.
        vocab_size: Number of token ids (PAD included).
        seq_len: Number of puzzle tokens L (prefix tokens come on top).
        num_puzzle_ids: Rows of the puzzle-embedding table.
    """

    def __init__(self, config: NetworkConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1) -> None:
        super().__init__()
        c = config
        if c.puzzle_emb_len < 0 or num_puzzle_ids < 1:
            raise ValueError("puzzle_emb_len must be >= 0 and num_puzzle_ids >= 1.")
        self.config = c
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.hidden_size = D = c.hidden_size
        self.prefix_len = c.puzzle_emb_len
        self.num_positions = seq_len + self.prefix_len
        self.embed_scale = math.sqrt(D)

        self.token_embedding = nn.Embedding(vocab_size, D)
        trunc_normal_(self.token_embedding.weight, std=1.0 / math.sqrt(D))
        self.puzzle_emb_dim = 0
        if self.prefix_len > 0:
            self.puzzle_emb_dim = c.puzzle_emb_dim if c.puzzle_emb_dim is not None else D
            if not 0 < self.puzzle_emb_dim <= self.prefix_len * D:
                raise ValueError(
                    f"puzzle_emb_dim {self.puzzle_emb_dim} must fit in {self.prefix_len} prefix tokens of width {D}."
                )
            # Sparse gradients: only the rows of the batch's puzzles get a gradient (SignSGD updates only those).
            self.puzzle_embedding = nn.Embedding(num_puzzle_ids, self.puzzle_emb_dim, sparse=True)
            nn.init.zeros_(self.puzzle_embedding.weight)
        self.position_embedding: nn.Embedding | None = None
        if c.positions == "learned":
            self.position_embedding = nn.Embedding(self.num_positions, D)
            trunc_normal_(self.position_embedding.weight, std=1.0 / math.sqrt(D))
        rotary = None
        if c.positions == "rope":
            if c.mixer != "attention":
                raise ValueError("positions='rope' needs mixer='attention'; token-MLP mixing uses positions='none'.")
            rotary = RotaryEmbedding(D // c.num_heads, self.num_positions, c.rope_theta)
        elif c.positions not in ("learned", "none"):
            raise ValueError(f"unknown positions {c.positions!r}; choose 'rope', 'learned' or 'none'.")
        sdpa_backend(c.attention_backend)  # an unknown name fails here, whatever the mixer
        if c.compile not in (False, True, "modules", "segment"):
            raise ValueError(f"unknown compile {c.compile!r} (model.network.compile); choose false, 'modules' (or "
                             "true) or 'segment'.")
        if c.forward_dtype not in FORWARD_DTYPES:
            raise ValueError(f"unknown forward_dtype {c.forward_dtype!r} (model.network.forward_dtype); choose "
                             "'float32' or 'bfloat16'.")
        self.forward_dtype = FORWARD_DTYPES[c.forward_dtype]
        self.compile_mode = {False: None, True: "modules"}.get(c.compile, c.compile)

        def stack(layers: int) -> ReasoningModule:
            return ReasoningModule(
                [
                    Block(D, self.num_positions, c.mixer, c.num_heads, c.expansion, c.rms_norm_eps, rotary,
                          c.attention_backend, c.token_mlp_norm)
                    for _ in range(layers)
                ]
            )

        self.latent_module = stack(c.num_layers)
        self.answer_module = None if c.shared else stack(c.answer_layers or c.num_layers)

        self.lm_head = lecun_linear(D, vocab_size)
        if c.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight  # one Parameter; the embedding's init survives
        self.q_head: nn.Linear | None = None
        if c.halt_head:
            self.q_head = CastLinear(D, 2, bias=True)
            with torch.no_grad():
                self.q_head.weight.zero_()
                self.q_head.bias.fill_(-5.0)

        self.register_buffer("y_init", trunc_normal_(torch.empty(D), std=1.0))
        self.register_buffer("z_init", trunc_normal_(torch.empty(D), std=1.0))

        self._compile_checked: set[str] = set()  # device types whose compile toolchain was checked
        self._segments: dict[Callable[..., object], Callable[..., object]] = {}  # compiled segment functions
        if self.compile_mode == "modules":
            for module in self.reasoning_modules():
                module.compile()  # in place: parameter names and state_dict keys stay as they are

    def reasoning_modules(self) -> list[ReasoningModule]:
        """The latent module, and the answer module when it is a separate one."""
        return [self.latent_module] + ([self.answer_module] if self.answer_module is not None else [])

    def _run(self, module: ReasoningModule, state: Tensor, injection: Tensor) -> Tensor:
        """Call a reasoning module; with compile 'modules', through `_compiled_call`."""
        if self.compile_mode != "modules":
            return module(state, injection)
        return self._compiled_call(module, state.device, state, injection)

    def _compiled_call(self, fn: Callable[..., Result], device: torch.device, *args: object) -> Result:
        """Call a compiled function: check the toolchain once per device type, name the option in a failure."""
        if device.type not in self._compile_checked:
            check_compile_toolchain(device)
            self._compile_checked.add(device.type)
        try:
            with torch._dynamo.config.patch(recompile_limit=SEGMENT_RECOMPILE_LIMIT):
                return fn(*args)
        except COMPILE_ERRORS as error:
            first = (str(error).strip().splitlines() or [""])[0]
            raise RuntimeError(
                f"model.network.compile={self.config.compile!r}: torch.compile failed on {device.type} "
                f"({type(error).__name__}: {first}); set model.network.compile=false to run uncompiled"
            ) from error

    def segment(self, fn: Callable[..., Result]) -> Callable[..., Result]:
        """`fn` (one whole segment: tensors in, tensors out, no host syncs) compiled as one graph (fullgraph) when
        compile is 'segment', else `fn` itself; one compiled function per `fn`, cached."""
        if self.compile_mode != "segment":
            return fn
        compiled = self._segments.get(fn)
        if compiled is None:
            compiled = self._segments[fn] = torch.compile(fn, fullgraph=True)

        def call(*args: object) -> Result:
            return self._compiled_call(compiled, self.y_init.device, *args)

        return call

    def initial_states(self, batch_size: int) -> tuple[Tensor, Tensor]:
        """Fixed starting answer and latent states, each [B, S, D] (S = prefix + sequence)."""
        shape = (batch_size, self.num_positions, self.hidden_size)
        y, z = self.y_init, self.z_init
        if self.forward_dtype is not None:
            y, z = y.to(self.forward_dtype), z.to(self.forward_dtype)
        return y.expand(shape), z.expand(shape)

    def eager_lookups(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """`batch` with its puzzle-table rows looked up (PUZZLE_ROWS, [B, puzzle_emb_dim]) when segments compile.

        The table's gradient is sparse, which inductor cannot compile; looked up outside the graph, the rows enter
        it as an input, the compiled backward returns their dense gradient and the eager lookup turns it into the
        table's sparse one. Without a compiled segment (or a table) the batch is returned as it is."""
        if self.compile_mode != "segment" or not self.prefix_len:
            return batch
        return {**batch, PUZZLE_ROWS: self.puzzle_embedding(batch["puzzle_ids"])}

    def embed(self, inputs: Tensor, puzzle_ids: Tensor, puzzle_rows: Tensor | None = None) -> Tensor:
        """Embed tokens [B, L] and puzzle ids [B] into x [B, S, D], puzzle prefix first, scaled by sqrt(D); with
        `puzzle_rows` (`eager_lookups`) the table's rows of those ids, already looked up."""
        if inputs.shape[-1] != self.seq_len:
            raise ValueError(f"inputs have length {inputs.shape[-1]}, the network was built for {self.seq_len}.")
        x = self.token_embedding(inputs)  # [B, L, D]
        if self.forward_dtype is not None:
            x = x.to(self.forward_dtype)
        if self.prefix_len:
            puzzle = self.puzzle_embedding(puzzle_ids) if puzzle_rows is None else puzzle_rows  # [B, puzzle_emb_dim]
            pad = self.prefix_len * self.hidden_size - self.puzzle_emb_dim
            prefix = F.pad(puzzle, (0, pad)).view(-1, self.prefix_len, self.hidden_size).to(x.dtype)
            x = torch.cat([prefix, x], dim=1)  # [B, S, D]
        if self.position_embedding is not None:
            x = (x + self.position_embedding.weight.to(x.dtype)) * (0.5**0.5)
        return x * self.embed_scale

    def latent_step(self, z: Tensor, y: Tensor, x: Tensor) -> Tensor:
        """One latent update z = f(z, y + x): the input is injected here only."""
        return self._run(self.latent_module, z, y + x)

    def answer_step(self, y: Tensor, z: Tensor) -> Tensor:
        """One answer update y = f(y, z)."""
        module = self.latent_module if self.answer_module is None else self.answer_module
        return self._run(module, y, z)

    def decode(self, y: Tensor) -> Tensor:
        """Token logits [B, L, V] in fp32 from the answer state, prefix positions dropped."""
        return self.lm_head(y[:, self.prefix_len :]).float()

    def halt_logits(self, y: Tensor) -> Tensor:
        """Halt and continue logits [B, 2] in fp32 from the answer state's first position; zeros without a Q head."""
        if self.q_head is None:
            return torch.zeros(y.shape[0], 2, dtype=torch.float32, device=y.device)
        return self.q_head(y[:, 0]).float()

    def num_parameters(self, include_puzzle_embedding: bool = False) -> int:
        """Trainable parameters (a tied matrix once); the puzzle-embedding table is left out by default, as the
        papers count."""
        skip = set() if include_puzzle_embedding or not self.prefix_len else {id(self.puzzle_embedding.weight)}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)
