"""What a reference TRM/HRM/RSM checkpoint's tensors show about its model, and the config completed from them.

`read_reference_layout` reads the width, vocabulary, layers, mixer, puzzle table, ... from tensor names and shapes
alone; `infer_reference_config` completes a reference model-constructor config from that plus the settings the weights
cannot tell, naming every one that is missing (`MissingReferenceSettings`). The names themselves:
`recursive_reasoning.reference_names`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from recursive_reasoning.core.layers import swiglu_hidden
from recursive_reasoning.reference_names import TRM_DEFAULT_PUZZLE_EMB_LEN, is_reference_key, layer_key, strip_wrappers

__all__ = ["MissingReferenceSettings", "ReferenceLayout", "infer_reference_config", "read_reference_layout"]

_REQUIRED = ("H_init", "L_init", "embed_tokens.embedding_weight", "lm_head.weight", "q_head.weight", "q_head.bias")
_RSM_REQUIRED = ("H_init", "L_init", "embed_tokens.embedding_weight", "lm_head.weight")
_MIXER_PARTS = {
    "attention": ("self_attn.qkv_proj.weight", "self_attn.o_proj.weight"),
    "mlp": ("mlp_t.gate_up_proj.weight", "mlp_t.down_proj.weight"),
}
_CHANNEL_PARTS = ("mlp.gate_up_proj.weight", "mlp.down_proj.weight")
_TIED = ("embed_tokens.embedding_weight", "lm_head.weight")  # one Parameter in RSM


@dataclass(frozen=True)
class ReferenceLayout:
    """What a reference state dict tells about its model from tensor names and shapes alone.

    Attributes:
        hidden_size: Width D (H_init, the token embedding).
        vocab_size: Rows of the token embedding.
        num_puzzle_identifiers: Rows of the puzzle-embedding table (1 when there is none).
        puzzle_emb_ndim: Width of the puzzle-embedding table (0 when there is none).
        L_layers: Blocks in `L_level` (RSM: in `core`).
        H_layers: Blocks in `H_level`; 0 for TRM and RSM (one shared stack).
        mlp_t: Token-MLP mixing (`mlp_t`) instead of self-attention.
        num_positions: Positions S = seq_len + prefix, when a tensor shows it (token mixer or learned table).
        learned_positions: Whether the model has a learned position table (`embed_pos`).
        swiglu_widths: (input width, inner width) of every kind of SwiGLU, to recover the expansion factor.
        rsm: The RSM layout: one `core` stack, no Q head, output head tied to the token embedding.
    """

    hidden_size: int
    vocab_size: int
    num_puzzle_identifiers: int
    puzzle_emb_ndim: int
    L_layers: int
    H_layers: int
    mlp_t: bool
    num_positions: int | None
    learned_positions: bool
    swiglu_widths: tuple[tuple[int, int], ...]
    rsm: bool = False

    @property
    def hierarchical(self) -> bool:
        """Two stacks (`H_level` and `L_level`): HRM. One: TRM or RSM."""
        return self.H_layers > 0

    @property
    def method(self) -> str:
        """'trm', 'hrm' or 'rsm': the reference model these tensors belong to."""
        return "rsm" if self.rsm else "hrm" if self.hierarchical else "trm"


def _examples(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def read_reference_layout(state_dict: Mapping[str, Any]) -> ReferenceLayout:
    """Read the architecture of a reference (training-checkpoint or model) state dict from its tensors.

    Raises:
        ValueError: If the names are not those of the reference TRM/HRM/RSM models, or tensors are missing or
            inconsistent.
    """
    keys = [str(k) for k in state_dict]
    if not keys or not all(isinstance(v, Tensor) for v in state_dict.values()):
        raise ValueError("not a state dict: expected a mapping of tensor names to tensors.")
    tensors = {strip_wrappers(str(k)): v for k, v in state_dict.items()}
    if len(tensors) != len(keys):
        raise ValueError("some tensor names repeat once the '_orig_mod.', 'model.' and 'inner.' prefixes are removed; "
                         "the file mixes several models.")
    unknown = [k for k in keys if not is_reference_key(k)]
    if len(unknown) == len(keys):
        hint = " It looks like an rr checkpoint's state dict (names start with 'net.')." if all(
            k.startswith("net.") for k in keys
        ) else ""
        raise ValueError(
            f"not a checkpoint of the reference TRM/HRM/RSM code: none of its {len(keys)} tensor names is a reference "
            f"name (it has {_examples(keys)}; expected names like "
            f"'_orig_mod.model.inner.L_level.layers.0.mlp.gate_up_proj.weight').{hint}"
        )
    if unknown:
        raise ValueError(
            f"tensor names the reference TRM/HRM/RSM models do not have: {_examples(unknown)}. The checkpoint comes "
            "from a different or modified architecture; only the plain TRM, HRM and RSM layouts can be imported."
        )
    rsm = any(name.startswith("core.") for name in tensors)
    if rsm and any(name.startswith(("L_level.", "H_level.", "q_head.")) for name in tensors):
        raise ValueError("inconsistent reference checkpoint: it has RSM's 'core' stack and TRM/HRM tensors "
                         "(L_level, H_level or q_head); the file mixes several models.")
    missing = [name for name in (_RSM_REQUIRED if rsm else _REQUIRED) if name not in tensors]
    if missing:
        raise ValueError(f"incomplete reference checkpoint: no {', '.join(missing)}.")

    hidden = tensors["H_init"].shape[0]
    vocab = tensors["embed_tokens.embedding_weight"].shape[0]
    expected = {
        "H_init": (hidden,), "L_init": (hidden,), "embed_tokens.embedding_weight": (vocab, hidden),
        "lm_head.weight": (vocab, hidden), "q_head.weight": (2, hidden), "q_head.bias": (2,),
    }
    if rsm:
        expected = {name: shape for name, shape in expected.items() if not name.startswith("q_head")}
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise ValueError(f"inconsistent reference checkpoint: {name} has shape {list(tensors[name].shape)}, "
                             f"expected {list(shape)} for hidden size {hidden} and vocabulary {vocab}.")
    if rsm and not torch.equal(*(tensors[name] for name in _TIED)):
        raise ValueError("inconsistent reference checkpoint: RSM ties lm_head.weight to embed_tokens.embedding_weight, "
                         "but the two tensors differ; the file comes from a modified RSM.")

    main = "core" if rsm else "L_level"
    layers: dict[str, dict[int, set[str]]] = {"L_level": {}, "H_level": {}, "core": {}}
    for name in tensors:
        layer = layer_key(name)
        if layer is not None:
            level, index, part = layer
            layers[level].setdefault(index, set()).add(part)
    if not layers[main]:
        raise ValueError(f"incomplete reference checkpoint: no {main} layers.")
    mixers = set()
    for level, blocks in layers.items():
        if blocks and sorted(blocks) != list(range(len(blocks))):
            raise ValueError(f"incomplete reference checkpoint: {level} has layers {sorted(blocks)}, not 0..n-1.")
        for index, parts in blocks.items():
            kinds = [kind for kind, names in _MIXER_PARTS.items() if set(names) <= parts]
            if len(kinds) != 1 or not set(_CHANNEL_PARTS) <= parts:
                raise ValueError(f"incomplete reference checkpoint: {level}.layers.{index} has only {sorted(parts)}.")
            mixers.add(kinds[0])
    if len(mixers) != 1:
        raise ValueError("inconsistent reference checkpoint: some layers use attention, others token-MLP mixing.")
    mlp_t = mixers == {"mlp"}

    def weight(part: str) -> Tensor:
        return tensors[f"{main}.layers.0.{part}"]

    widths = [(hidden, weight("mlp.gate_up_proj.weight").shape[0] // 2)]
    num_positions = None
    if mlp_t:
        num_positions = weight("mlp_t.gate_up_proj.weight").shape[1]
        widths.append((num_positions, weight("mlp_t.gate_up_proj.weight").shape[0] // 2))
    learned = "embed_pos.embedding_weight" in tensors
    if learned:
        rows = tensors["embed_pos.embedding_weight"].shape[0]
        if num_positions is not None and rows != num_positions:
            raise ValueError(f"inconsistent reference checkpoint: the position table has {rows} rows but the token "
                             f"mixer spans {num_positions} positions.")
        num_positions = rows
    table = tensors.get("puzzle_emb.weights")
    return ReferenceLayout(
        hidden_size=hidden,
        vocab_size=vocab,
        num_puzzle_identifiers=table.shape[0] if table is not None else 1,
        puzzle_emb_ndim=table.shape[1] if table is not None else 0,
        L_layers=len(layers[main]),
        H_layers=len(layers["H_level"]),
        mlp_t=mlp_t,
        num_positions=num_positions,
        learned_positions=learned,
        swiglu_widths=tuple(widths),
        rsm=rsm,
    )


class MissingReferenceSettings(ValueError):
    """Settings that neither the weights nor the given config determine; `missing` maps each name to why."""

    def __init__(self, missing: dict[str, str], hint: str = "") -> None:
        self.missing = dict(missing)
        items = "; ".join(f"{name}: {why}" for name, why in self.missing.items())
        super().__init__(f"settings the weights do not show, and not given -- {items}." + (f" {hint}" if hint else ""))


def _fit_expansion(given: float | None, widths: tuple[tuple[int, int], ...]) -> float:
    """An expansion factor that reproduces every SwiGLU inner width (the given one if it does)."""
    candidates = [] if given is None else [float(given)]
    if given is None:
        candidates += [4.0, 2.0, 8.0, 1.0, 3.0, 6.0] + [1.5 * inner / width for width, inner in widths]
    for expansion in candidates:
        if all(swiglu_hidden(width, expansion) == inner for width, inner in widths):
            return expansion
    shown = ", ".join(f"width {w} -> {i}" for w, i in widths)
    if given is not None:
        raise ValueError(f"expansion {given} does not give the checkpoint's SwiGLU widths ({shown}).")
    raise ValueError(f"no expansion factor reproduces the checkpoint's SwiGLU widths ({shown}).")


_RECURSION_KEYS = ("H_cycles", "L_cycles", "halt_max_steps", "halt_exploration_prob", "prob_detach_prev_H")


def infer_reference_config(layout: ReferenceLayout, given: Mapping[str, Any]) -> dict[str, Any]:
    """Complete a reference model-constructor config from the weights' layout and the given settings.

    What the tensors show wins over nothing, and must agree with `given` (e.g. the run's `all_config.yaml` arch
    section, or flags): a contradiction is an error, since it means the config belongs to another run. Settings the
    weights cannot tell come from `given`: `seq_len` (unless a token mixer or a learned position table shows the
    number of positions), `num_heads` and `pos_encodings` for attention models. Reference defaults fill the rest
    (`rms_norm_eps` 1e-5, `rope_theta` 10000, TRM `puzzle_emb_len` 16). The recursion settings in `given` (H_cycles,
    L_cycles, halt_max_steps, halt_exploration_prob) are passed through.

    Returns:
        A dict `network_config_from_reference` accepts (hidden_size, L_layers, seq_len, vocab_size, ...).

    Raises:
        MissingReferenceSettings: Naming every setting that is needed but neither in the weights nor in `given`.
        ValueError: If `given` contradicts the weights.
    """
    read = {
        "hidden_size": layout.hidden_size,
        "vocab_size": layout.vocab_size,
        "puzzle_emb_ndim": layout.puzzle_emb_ndim,
        "L_layers": layout.L_layers,
        "mlp_t": layout.mlp_t,
    }
    if layout.puzzle_emb_ndim:
        read["num_puzzle_identifiers"] = layout.num_puzzle_identifiers
    if layout.hierarchical:
        read["H_layers"] = layout.H_layers
    conflicts = [
        f"{name}={given[name]!r} (the weights have {value!r})"
        for name, value in read.items()
        if given.get(name) is not None and given[name] != value
    ]
    positions = given.get("pos_encodings")
    if positions == "learned" and not layout.learned_positions:
        conflicts.append("pos_encodings='learned' (the weights have no learned position table)")
    if layout.learned_positions and positions not in (None, "learned"):
        conflicts.append(f"pos_encodings={positions!r} (the weights have a learned position table)")
    if conflicts:
        raise ValueError(
            f"the config contradicts the checkpoint: {'; '.join(conflicts)}. Use the config of the run that wrote "
            "this checkpoint (its all_config.yaml)."
        )

    missing: dict[str, str] = {}
    hidden, ndim = layout.hidden_size, layout.puzzle_emb_ndim
    fitting = -(-ndim // hidden)  # prefix tokens the puzzle embedding needs
    seq_len = given.get("seq_len")
    if not ndim:
        prefix = 0
    elif layout.hierarchical:
        prefix = fitting  # HRM: always ceil(ndim / D)
    elif given.get("puzzle_emb_len") is not None:
        prefix = int(given["puzzle_emb_len"]) or fitting
    elif layout.num_positions is not None and seq_len is not None:
        prefix = layout.num_positions - int(seq_len)
    else:
        prefix = TRM_DEFAULT_PUZZLE_EMB_LEN
    if prefix < fitting:
        raise ValueError(f"a puzzle prefix of {prefix} tokens cannot hold the {ndim}-wide puzzle embedding at width "
                         f"{hidden}; check seq_len / puzzle_emb_len.")
    if layout.num_positions is not None:
        derived = layout.num_positions - prefix
        if seq_len is not None and int(seq_len) != derived:
            raise ValueError(f"seq_len {seq_len} + {prefix} puzzle-prefix tokens != the checkpoint's "
                             f"{layout.num_positions} positions; check seq_len / puzzle_emb_len.")
        seq_len = derived
    elif seq_len is None:
        missing["seq_len"] = (
            "puzzle tokens per example (81 Sudoku 9x9, 900 Maze 30x30 / ARC), from the data set's dataset.json; "
            "only a token-MLP mixer or a learned position table shows it"
        )

    if layout.mlp_t:
        heads = given.get("num_heads", 8)  # token-MLP blocks have no heads and apply no RoPE
        positions = "learned" if layout.learned_positions else "none"
    else:
        heads = given.get("num_heads")
        if heads is None:
            missing["num_heads"] = "attention heads, which the fused QKV weight does not show"
        if layout.learned_positions:
            positions = "learned"
        elif positions is None:
            missing["pos_encodings"] = "'rope' or 'none', either fits attention without a learned position table"
    if missing:
        raise MissingReferenceSettings(missing)

    config = {
        **read,
        "num_puzzle_identifiers": layout.num_puzzle_identifiers,
        "H_layers": layout.H_layers,
        "seq_len": int(seq_len),
        "puzzle_emb_len": prefix,
        "num_heads": int(heads),
        "expansion": _fit_expansion(given.get("expansion"), layout.swiglu_widths),
        "pos_encodings": positions if positions in ("rope", "learned") else "none",
        "rms_norm_eps": float(given.get("rms_norm_eps", 1e-5)),
        "rope_theta": float(given.get("rope_theta", 10000.0)),
    }
    config.update({key: given[key] for key in _RECURSION_KEYS if given.get(key) is not None})
    return config
