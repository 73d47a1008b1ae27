"""`keep_freed_memory` / the `KeepFreedMemory` callback: a freed activation-sized buffer stays in the process's heap.

Each case runs in a fresh interpreter, because the setting is process-wide and would change the test process.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and mallinfo2 are glibc's")

PROBE = """
import ctypes, sys
import lightning as L, torch
from recursive_reasoning.callbacks import KeepFreedMemory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    callback = KeepFreedMemory()
    callback.setup(L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False), None, "fit")
    assert callback.applied is True
buffer = torch.ones(64 * 2**20, dtype=torch.uint8)
mapped = libc.mallinfo2().hblkhd
del buffer
print(mapped >> 20, libc.mallinfo2().fordblks >> 20)
"""


def probe(mode: str) -> tuple[int, int]:
    """(MiB served by mmap while a 64 MiB tensor lives, MiB of free heap after it is freed)."""
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    mapped, free = done.stdout.split()[-2:]
    return int(mapped), int(free)


def test_default_glibc_unmaps_a_freed_buffer_and_the_callback_keeps_it() -> None:
    mapped, free = probe("default")
    assert mapped >= 64 and free < 64  # its own mmap, returned to the OS on free
    mapped, free = probe("keep")
    assert mapped < 64 and free >= 64  # served from the heap, kept there for the next step
