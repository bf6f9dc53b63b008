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
from pathlib import Path

import numpy as np
import torch

THREADS_VARIABLE = "XDLEARN_THREADS"   # environment variable that caps torch's CPU threads
C_LIBRARY = "libc.so.6"                # glibc, whose malloc_trim hands freed heap pages back to the OS
KIB_PER_MB = 1024                      # ru_maxrss unit on Linux
BYTES_PER_MB = 1024 * 1024             # ru_maxrss unit on macOS
CGROUP_V2_CPU = "/sys/fs/cgroup/cpu.max"                          # "<quota> <period>" or "max <period>"
CGROUP_V1_CPU = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")  # quota -1: none


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch so a run can be repeated exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _cgroup_cpu_limit(v2: str = CGROUP_V2_CPU, v1: tuple[str, str] = CGROUP_V1_CPU) -> float | None:
    """The CPUs a container's quota allows (e.g. 2.0), or None without one: Linux still shows every host core."""
    try:
        quota, period = Path(v2).read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota, period = (Path(path).read_text().strip() for path in v1)
        except (OSError, ValueError):
            return None
    if quota in ("max", "-1") or float(period) <= 0:
        return None
    return float(quota) / float(period)


def available_cores(v2: str = CGROUP_V2_CPU, v1: tuple[str, str] = CGROUP_V1_CPU) -> int:
    """Cores this process may use: its CPU affinity, capped by a container's CPU quota.

    ``os.cpu_count()`` counts the host's cores; in a container limited to 2 CPUs (Binder, most CI) torch would start
    a thread per host core and the threads would wait on each other far longer than the work takes.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = _cgroup_cpu_limit(v2, v1)
    return max(1, min(cores, int(limit))) if limit else max(1, cores)


def set_threads(n: int | None = None) -> int:
    """Use ``n`` CPU threads for torch (default: $XDLEARN_THREADS, else the cores available); returns the number."""
    torch.set_num_threads(n or int(os.environ.get(THREADS_VARIABLE, "0")) or available_cores())
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
