"""Atomic file writes: the one way rr writes a file a crash must not leave half-written.

`atomic_write` writes into a temporary file beside the target, fsyncs it, then renames it over the target, so a
crash or a full disk mid-write leaves the previous file intact. Checkpoints, data caches, pictures, tables and
reports all go through it.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text"]

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


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """`atomic_write` of a bytes payload; returns the target path."""
    atomic_write(target, lambda handle: handle.write(data))
    return Path(target)


def atomic_write_text(target: str | os.PathLike, text: str) -> Path:
    """`atomic_write` of UTF-8 text; returns the target path."""
    return atomic_write_bytes(target, text.encode("utf-8"))
