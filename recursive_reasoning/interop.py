"""Mapping between the public TRM/HRM reference code's weights and ours.

The reference (SamsungSAILMontreal/TinyRecursiveModels, sapientinc/HRM) names its tensors `inner.L_level.layers.0.
self_attn.qkv_proj.weight` and so on; training checkpoints add `_orig_mod.` (torch.compile) and `model.`
(ACTLossHead) in front. Fused QKV and gate/up layouts are the same as ours, so every tensor maps one-to-one.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from recursive_reasoning.network import NetworkConfig

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

_LAYER_KEY = re.compile(r"^(L_level|H_level)\.layers\.(\d+)\.(.+)$")


def strip_wrappers(key: str) -> str:
    """Remove the `_orig_mod.` and `model.` prefixes of reference training checkpoints, then `inner.`."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key[len("inner.") :] if key.startswith("inner.") else key


def reference_key_to_ours(key: str, shared: bool) -> str:
    """Our `ReasoningNetwork` state-dict name for one reference tensor name.

    Args:
        key: A reference name, with or without checkpoint prefixes.
        shared: Whether our network uses one module for both updates (TRM) or two (HRM).

    Raises:
        KeyError: If the name is not one the reference models produce.
    """
    name = strip_wrappers(key)
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    match = _LAYER_KEY.match(name)
    if match and match.group(3) in _LAYER_PARTS:
        level, index, part = match.groups()
        if level == "H_level" and shared:
            raise KeyError(f"{key!r} belongs to a separate answer module, but the target network is shared (TRM).")
        module = "answer_module" if level == "H_level" else "latent_module"
        return f"{module}.blocks.{index}.{_LAYER_PARTS[part]}"
    raise KeyError(f"{key!r} is not a tensor name of the reference TRM/HRM models.")


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
    hidden = config["hidden_size"]
    emb_dim = config.get("puzzle_emb_ndim", 0)
    if "puzzle_emb_len" in config and config["puzzle_emb_len"]:
        prefix = config["puzzle_emb_len"]
    else:
        prefix = -(-emb_dim // hidden) if emb_dim else 0
    net = NetworkConfig(
        hidden_size=hidden,
        num_heads=config["num_heads"],
        expansion=config["expansion"],
        num_layers=config["L_layers"],
        answer_layers=config["H_layers"] if is_hrm else None,
        shared=not is_hrm,
        mixer="mlp" if config.get("mlp_t", False) else "attention",
        positions=config.get("pos_encodings", "rope"),
        puzzle_emb_len=prefix if emb_dim else 0,
        puzzle_emb_dim=emb_dim or None,
        rms_norm_eps=config.get("rms_norm_eps", 1e-5),
        rope_theta=config.get("rope_theta", 10000.0),
    )
    return net, config["vocab_size"], config["seq_len"], config["num_puzzle_identifiers"]


def load_reference_weights(network: torch.nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Load reference weights into a `ReasoningNetwork` (strict: every tensor on both sides must match)."""
    shared = getattr(network, "answer_module", None) is None
    converted = convert_reference_state_dict(state_dict, shared)
    missing, unexpected = network.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"reference weights do not fit this network: missing {sorted(missing)}, unexpected {sorted(unexpected)}. "
            "Build the network from the reference config (network_config_from_reference)."
        )
