"""Reference TRM/HRM/RSM names -> ours: tensor names of the weights and keys of the model-constructor config.

The reference (SamsungSAILMontreal/TinyRecursiveModels, sapientinc/HRM) names its tensors `inner.L_level.layers.0.
self_attn.qkv_proj.weight` and so on; training checkpoints add `_orig_mod.` (torch.compile) and `model.`
(ACTLossHead) in front. RSM (navidivan/rsm) has one shared stack `core.layers.{i}.*` with the same per-layer names, no
`inner.`, no Q head, and an output head tied to the token embedding (`lm_head.weight` is `embed_tokens.
embedding_weight`). Fused QKV and gate/up layouts are the same as ours, so every tensor maps one-to-one.

What the tensors say about the model is read in `recursive_reasoning.reference_layout`; `rr import`
(`recursive_reasoning/import_checkpoint.py`) builds on both.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from recursive_reasoning.core.network import NetworkConfig

__all__ = [
    "TRM_DEFAULT_PUZZLE_EMB_LEN",
    "convert_reference_state_dict",
    "is_reference_key",
    "layer_key",
    "load_reference_weights",
    "network_config_from_reference",
    "reference_key_to_ours",
    "strip_wrappers",
]

_WRAPPER_PREFIXES = ("_orig_mod.", "model.")

_LAYER_PARTS = {
    "self_attn.qkv_proj.weight": "mix.qkv.weight",
    "self_attn.o_proj.weight": "mix.out.weight",
    "mlp_t.gate_up_proj.weight": "mix.gate_up.weight",
    "mlp_t.down_proj.weight": "mix.down.weight",
    "mlp.gate_up_proj.weight": "mlp.gate_up.weight",
    "mlp.down_proj.weight": "mlp.down.weight",
}

_TOP_LEVEL = {
    "H_init": "y_init",
    "L_init": "z_init",
    "embed_tokens.embedding_weight": "token_embedding.weight",
    "embed_pos.embedding_weight": "position_embedding.weight",
    "lm_head.weight": "lm_head.weight",
    "q_head.weight": "q_head.weight",
    "q_head.bias": "q_head.bias",
    "puzzle_emb.weights": "puzzle_embedding.weight",
}

_LAYER_KEY = re.compile(r"^(L_level|H_level|core)\.layers\.(\d+)\.(.+)$")
TRM_DEFAULT_PUZZLE_EMB_LEN = 16  # `puzzle_emb_len` default of the reference TRM config


def strip_wrappers(key: str) -> str:
    """Remove the `_orig_mod.` and `model.` prefixes of reference training checkpoints, then `inner.`."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key.removeprefix("inner.")


def layer_key(name: str) -> tuple[str, int, str] | None:
    """(stack, block index, part) of a reference layer tensor name without prefixes, e.g. ('L_level', 0,
    'mlp.down_proj.weight'); None for any other name."""
    match = _LAYER_KEY.match(name)
    if match is None or match.group(3) not in _LAYER_PARTS:
        return None
    return match.group(1), int(match.group(2)), match.group(3)


def is_reference_key(key: str) -> bool:
    """Whether a tensor name (with or without checkpoint prefixes) is one the reference TRM/HRM/RSM models produce."""
    name = strip_wrappers(key)
    return name in _TOP_LEVEL or layer_key(name) is not None


def reference_key_to_ours(key: str, shared: bool) -> str:
    """Our `ReasoningNetwork` state-dict name for one reference tensor name.

    Args:
        key: A reference name, with or without checkpoint prefixes.
        shared: Whether our network uses one module for both updates (TRM, RSM) or two (HRM).

    Raises:
        KeyError: If the name is not one the reference models produce.
    """
    name = strip_wrappers(key)
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    layer = layer_key(name)
    if layer is not None:
        level, index, part = layer
        if level == "H_level" and shared:
            raise KeyError(f"{key!r} belongs to a separate answer module, but the target network is shared (TRM).")
        module = "answer_module" if level == "H_level" else "latent_module"
        return f"{module}.blocks.{index}.{_LAYER_PARTS[part]}"
    raise KeyError(f"{key!r} is not a tensor name of the reference TRM/HRM/RSM models.")


def convert_reference_state_dict(state_dict: dict[str, Tensor], shared: bool) -> dict[str, Tensor]:
    """Rename a reference (or reference-checkpoint) state dict to ours; values are cast to float32."""
    return {reference_key_to_ours(k, shared): v.float() for k, v in state_dict.items()}


def network_config_from_reference(config: dict[str, Any], model_class: str) -> tuple[NetworkConfig, int, int, int]:
    """Translate a reference model-constructor config to (NetworkConfig, vocab_size, seq_len, num_puzzle_ids).

    Args:
        config: The kwargs dict the reference passes to its model class (hidden_size, L_layers, mlp_t, ...).
        model_class: The reference class name, e.g. 'recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1'.
    """
    is_hrm = "hrm" in model_class.lower() or "Hierarchical" in model_class
    is_rsm = "rsm" in model_class.lower()
    hidden = config["hidden_size"]
    emb_dim = config.get("puzzle_emb_ndim", 0)
    if is_rsm and config.get("puzzle_emb_len", TRM_DEFAULT_PUZZLE_EMB_LEN):  # RSM: default 16, 0 = ceil(ndim / D)
        prefix = config.get("puzzle_emb_len", TRM_DEFAULT_PUZZLE_EMB_LEN)
    elif "puzzle_emb_len" in config and config["puzzle_emb_len"] and not is_hrm:  # HRM always uses ceil(ndim / D)
        prefix = config["puzzle_emb_len"]
    else:
        prefix = -(-emb_dim // hidden) if emb_dim else 0
    mlp_t = config.get("mlp_t", False)
    positions = config.get("pos_encodings", "rope")
    # The reference builds RoPE tables for token-MLP models but never applies them; any other name means none.
    if positions not in ("rope", "learned") or (positions == "rope" and mlp_t):
        positions = "none"
    net = NetworkConfig(
        hidden_size=hidden,
        num_heads=config["num_heads"],
        expansion=config["expansion"],
        num_layers=config["L_layers"],
        answer_layers=config["H_layers"] if is_hrm else None,
        shared=not is_hrm,
        mixer="mlp" if mlp_t else "attention",
        positions=positions,
        puzzle_emb_len=prefix if emb_dim else 0,
        puzzle_emb_dim=emb_dim or None,
        rms_norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_theta=config.get("rope_theta", 10000.0),
        # RSM's block norms the token mixer's output over channels, ties its output head and has no Q head.
        token_mlp_norm="channels" if is_rsm else "positions",
        tie_embeddings=is_rsm,
        halt_head=not is_rsm,
    )
    return net, config["vocab_size"], config["seq_len"], config["num_puzzle_identifiers"]


def load_reference_weights(network: torch.nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Load reference weights into a `ReasoningNetwork` (strict: every tensor on both sides must match).

    A network with `tie_embeddings` takes one matrix for its token embedding and output head, so the reference's two
    must be equal (RSM saves the same tensor under both names).
    """
    shared = getattr(network, "answer_module", None) is None
    converted = convert_reference_state_dict(state_dict, shared)
    if getattr(network, "config", None) is not None and network.config.tie_embeddings:
        embedding, head = (converted.get(name) for name in ("token_embedding.weight", "lm_head.weight"))
        if embedding is not None and head is not None and not torch.equal(embedding, head):
            raise ValueError(
                "the network ties its output head to the token embedding (tie_embeddings), but the reference's "
                "lm_head.weight and embed_tokens.embedding_weight differ; build it with tie_embeddings=False."
            )
    ours = network.state_dict()
    wrong = [
        f"{name} {list(value.shape)} (ours {list(ours[name].shape)})"
        for name, value in converted.items()
        if name in ours and value.shape != ours[name].shape
    ]
    if wrong:
        raise ValueError(
            f"reference weights do not fit this network; shapes differ: {', '.join(wrong)}. "
            "Build the network from the reference config (network_config_from_reference)."
        )
    missing, unexpected = network.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"reference weights do not fit this network: missing {sorted(missing)}, unexpected {sorted(unexpected)}. "
            "Build the network from the reference config (network_config_from_reference)."
        )
