"""Checkpoint I/O that never leaves a half-written file and refuses a damaged one.

`atomic_write` writes to a temporary file beside the target, then renames it over the target, so a crash or a full
disk mid-write leaves the previous file intact. `AtomicCheckpointIO` saves through it, storing a CRC-32 of every
tensor under `rr_checksums`; `verify_checkpoint` (called by `AtomicCheckpointIO.load_checkpoint` and `rr solve`)
refuses a tensor whose bytes changed since the save and non-finite weights, naming them. Checkpoints written before
checksums existed load with a warning.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

CHECKSUMS_KEY = "rr_checksums"
WEIGHT_KEYS = ("state_dict", "current_model_state")  # the weights whose values must be finite
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _umask() -> int:
    """The process's umask (read by setting it and putting it back at once: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_failure(target: Path, err: OSError) -> OSError:
    """`err` with a message that says what failed, that the previous file is intact, and what to do."""
    if err.errno in _NO_SPACE:
        why = "the disk is full"
        fix = "free space there (or point the checkpoint directory at another disk)"
    elif err.errno in _NOT_WRITABLE:
        why = f"its directory {target.parent} is not writable"
        fix = "make the directory writable or choose another one"
    else:
        why = "the write failed"
        fix = "check the disk"
    message = (f"could not write {target}: {why} ({err.strerror or err}). An existing {target.name} is left as it "
               f"was; {fix}, then resume from the last checkpoint (rr fit --ckpt_path ...)")
    return OSError(err.errno, message)


def atomic_write(target: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write `target` with `write(handle)` into a temporary file beside it, fsync, then rename it over `target`.

    The file gets the permissions of a plainly created one (0o666 & ~umask). On any failure the temporary file is
    removed and `target` keeps its previous contents; an `OSError` names the file, the cause and the fix.
    """
    target = Path(target)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power loss
        finally:
            os.close(directory)
    except OSError as err:
        raise _write_failure(target, err) from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


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
