"""Checkpoint I/O that never leaves a half-written file and refuses a damaged one.

`AtomicCheckpointIO` saves through `core.files.atomic_write` (temporary file, fsync, rename), so a crash or a full
disk mid-write leaves the previous checkpoint intact, and stores a CRC-32 of every tensor under `rr_checksums`; `verify_checkpoint` (called by `AtomicCheckpointIO.load_checkpoint` and `rr solve`)
refuses a tensor whose bytes changed since the save and non-finite weights, naming them. Checkpoints written before
checksums existed load with a warning.
"""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from recursive_reasoning.core.files import atomic_write

CHECKSUMS_KEY = "rr_checksums"
WEIGHT_KEYS = ("state_dict", "current_model_state")  # the weights whose values must be finite


def named_tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """Every tensor in nested dicts, lists and tuples, named by its key path ('state_dict/net.lm_head.weight')."""
    if isinstance(obj, Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if not (prefix == "" and key == CHECKSUMS_KEY):
                yield from named_tensors(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from named_tensors(value, f"{prefix}/{i}" if prefix else str(i))


def tensor_checksum(t: Tensor) -> int:
    """CRC-32 of the tensor's bytes (any dtype, CPU copy if needed)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    return zlib.crc32(flat.view(torch.uint8).numpy()) if flat.numel() else 0


def checkpoint_checksums(checkpoint: dict[str, Any]) -> dict[str, int]:
    """{key path: CRC-32} of every tensor in `checkpoint`; a tensor stored under several paths is hashed once."""
    seen: dict[int, int] = {}
    sums = {}
    for name, t in named_tensors(checkpoint):
        if id(t) not in seen:
            seen[id(t)] = tensor_checksum(t)
        sums[name] = seen[id(t)]
    return sums


def verify_checkpoint(checkpoint: Any, path: str | os.PathLike) -> None:
    """Refuse a loaded checkpoint that is not a dict, whose tensors differ from their saved checksums, or whose
    weights are not finite; warn once that one without checksums (written before rr stored them) is unverified."""
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} is not a checkpoint: it holds a {type(checkpoint).__name__}, not a dict of states; "
                         "pass a .ckpt file written by rr fit")
    saved = checkpoint.get(CHECKSUMS_KEY)
    if saved is None:
        rank_zero_warn(f"checkpoint {path} has no tensor checksums (written before rr stored them): loaded unverified")
    else:
        found = dict(named_tensors(checkpoint))
        missing = sorted(saved.keys() - found.keys())
        if missing:
            raise ValueError(f"checkpoint {path} is corrupted: tensor {missing[0]} is missing ({len(missing)} in all); "
                             "use another copy or an earlier checkpoint")
        for name, t in found.items():
            if name not in saved:
                raise ValueError(f"checkpoint {path} is corrupted: tensor {name} has no saved checksum; use another "
                                 "copy or an earlier checkpoint")
            if tensor_checksum(t) != saved[name]:
                raise ValueError(f"checkpoint {path} is corrupted: tensor {name} differs from its saved checksum (the "
                                 "file changed after it was written); use another copy or an earlier checkpoint")
    for key in WEIGHT_KEYS:
        for name, t in named_tensors(checkpoint.get(key, {}), key):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t)).sum())
                raise ValueError(f"checkpoint {path} holds non-finite weights: {name} has {bad} NaN or inf values of "
                                 f"{t.numel()}; training diverged before this save: use an earlier checkpoint")


def unreadable(path: str | os.PathLike, err: BaseException) -> str:
    """The message for a file torch.load cannot read: truncated, not a checkpoint, or not weights-only data."""
    detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return (f"checkpoint {path} cannot be read: it is truncated or not a PyTorch checkpoint ({type(err).__name__}: "
            f"{detail}); use another copy or an earlier checkpoint")


READ_ERRORS = (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile)


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose saves are atomic and checksummed, and whose loads verify the checksums."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options.")
        stored = {**checkpoint, CHECKSUMS_KEY: checkpoint_checksums(checkpoint)}
        atomic_write(path, lambda handle: torch.save(stored, handle))

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        try:
            if map_location is None:
                checkpoint = super().load_checkpoint(path, weights_only=weights_only)
            else:
                checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except READ_ERRORS as err:
            raise ValueError(unreadable(path, err)) from err
        verify_checkpoint(checkpoint, path)
        return checkpoint
