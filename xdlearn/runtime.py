"""The process the lessons run in: seeds, CPU threads, freed memory and peak memory.

The bottom of the library: it imports no other xdlearn module, so every module (``train``, ``evaluate``,
``job``, ``lesson``) can use these helpers without importing anything above itself.
"""
from __future__ import annotations

import ctypes
import gc
import os
import random
import sys

import numpy as np
import torch

THREADS_VARIABLE = "XDLEARN_THREADS"   # environment variable that caps torch's CPU threads
C_LIBRARY = "libc.so.6"                # glibc, whose malloc_trim hands freed heap pages back to the OS
KIB_PER_MB = 1024                      # ru_maxrss unit on Linux
BYTES_PER_MB = 1024 * 1024             # ru_maxrss unit on macOS


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so a run can be repeated exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(n: int | None = None) -> int:
    """Use ``n`` CPU threads for torch (default: $XDLEARN_THREADS, else all cores); returns the number."""
    torch.set_num_threads(n or int(os.environ.get(THREADS_VARIABLE, "0")) or os.cpu_count() or 1)
    return torch.get_num_threads()


def progress_wanted(progress: bool) -> bool:
    """Whether to draw a progress bar: asked for, and not switched off with ``TQDM_DISABLE=1``.

    tqdm honours that variable in a terminal, but its notebook bar passes ``disable=False`` itself and so ignores it;
    the book's build sets it so that no page shows a bar of a run that ended when the book was built.
    """
    return progress and os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")


def release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS, so a deleted model stops counting.

    After a model and its optimiser are deleted, glibc keeps their memory in its heap, where the next model
    fragments it; the process then looks (and on Binder, counts) hundreds of MB bigger than what it holds.
    ``malloc_trim`` returns those pages. It is a no-op where the C library has no such call.
    """
    gc.collect()
    try:
        ctypes.CDLL(C_LIBRARY).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB: what a memory budget is measured against.

    ``ru_maxrss`` is in KiB on Linux and in bytes on macOS; ``resource`` is imported here because Windows
    has no such module, and importing this module must work everywhere.
    """
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / BYTES_PER_MB if sys.platform == "darwin" else peak / KIB_PER_MB
