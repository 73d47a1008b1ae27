"""Exact resumption: the ACT carry of every rank and the RNG states, as plain tensors, lists and numbers in
checkpoints (so they load with `torch.load(weights_only=True)`), and their restoration on any rank layout."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from strategies.base import Carry

__all__ = ["carry_slice", "carry_state", "gathered", "gathered_objects", "rng_states", "set_rng_states"]


def gathered(t: Tensor) -> Tensor:
    """`t` of every rank concatenated along dim 0 in rank order (itself without a multi-rank process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def gathered_objects(obj: Any) -> list[Any]:
    """`obj` of every rank, in rank order (a one-element list without a multi-rank process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def carry_state(carry: Carry) -> dict[str, Any]:
    """The carry of all ranks as CPU tensors, slots in rank order (bool flags as uint8, which every backend gathers)."""
    return {
        "y": gathered(carry.y).cpu(),
        "z": gathered(carry.z).cpu(),
        "steps": gathered(carry.steps).cpu(),
        "halted": gathered(carry.halted.to(torch.uint8)).bool().cpu(),
        "batch": {k: gathered(v).cpu() for k, v in carry.batch.items()},
    }


def carry_slice(state: dict[str, Any], world_size: int, rank: int, device: torch.device) -> Carry | None:
    """Rank `rank`'s contiguous share of a saved carry on `device`; None when the slots do not divide evenly."""
    slots = state["steps"].shape[0]
    if slots % world_size:
        return None
    lo, hi = rank * slots // world_size, (rank + 1) * slots // world_size
    return Carry(
        y=state["y"][lo:hi].to(device),
        z=state["z"][lo:hi].to(device),
        steps=state["steps"][lo:hi].to(device),
        halted=state["halted"][lo:hi].to(device),
        batch={k: v[lo:hi].to(device) for k, v in state["batch"].items()},
    )


def rng_states() -> dict[str, Any]:
    """This process's global RNG states (torch CPU, the current CUDA device if in use, numpy, Python), as tensors,
    lists and numbers so the checkpoint still loads with `torch.load(weights_only=True)`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(internal), "gauss": python_gauss},
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what `rng_states` returned."""
    torch.set_rng_state(states["torch"])
    if states.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
