"""Freed memory kept for the next training step (glibc's malloc), set when ``study`` is imported.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and
unmaps it when freed, so each training step faults in every such tensor again, a 4 KiB page at a
time: a ReActNet-A kernel of 1024x1024x3x3 weights is 38 MiB, and its binarizer's weight-sized
temporaries cost several times their arithmetic that way (measured here: a 9.4M-float subtraction
18 ms, 3.2 ms in reused memory; a binary ReActNet-A step about a fifth faster). With
``M_MMAP_MAX = 0`` every block comes from the heap, and with a high ``M_TRIM_THRESHOLD`` what a step
frees stays there for the next one: the process keeps about its peak memory (ReActNet-A at batch
16: 2.5 GiB against 2.2), as torch's GPU caching allocator does. torch's own knob
(``THP_MEM_ALLOC_ENABLE``, huge pages) was slower here: the kernel compacts memory to find them.

Numbers do not change. Nothing is set outside glibc, nor when the user tunes glibc's malloc
through its environment (``MALLOC_*_`` or ``GLIBC_TUNABLES``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # free memory beyond this much at the heap's top still goes back to the system

kept = False  # whether this process keeps freed memory (the benchmark's set-up line says it)


def _users_own() -> bool:
    return "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ)


def keep_freed_memory() -> None:
    """Serve large blocks from the heap and keep them (``kept``), unless not glibc or the user tunes it."""
    global kept
    if _users_own():
        return
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    kept = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
