"""Settings for running the lessons as tests (nbval), and the opt-in browser tests of the built book.

With ``XDLEARN_SAVE_EXECUTED=<dir>`` every notebook the run executes is also saved there, executed, for
``book/build.py --executed <dir>`` (see tests/executed.py); without it nothing changes.
"""
from __future__ import annotations

import os

import pytest

# nbval waits a hard-coded 5 s for each output message after a cell has finished
# (it has no option for it). On a busy 2-core machine the kernel can take longer to
# publish the last messages of a long training cell, and the cell then fails with
# "Timeout of 5 seconds exceeded waiting for output" although it ran correctly.
# The cell's own run time stays bounded by --nbval-cell-timeout.
OUTPUT_TIMEOUT_S = 120
BOOK_SITE_OPTION = "--book-site"
# ``pytest -n auto`` (pytest-xdist): a worker may run a lesson (<= 1.8 GB) beside its own process, so each worker
# needs this much free memory; and a worker gets the cores divided among the workers as its torch threads.
MEMORY_PER_WORKER_BYTES = int(2.5e9)


def _free_memory_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """Memory available to new processes (Linux's MemAvailable, which counts reclaimable cache), or None elsewhere."""
    try:
        with open(meminfo) as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024   # reported in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


@pytest.hookimpl(optionalhook=True)   # pytest-xdist's hook: without the plugin (-p no:xdist) it is simply unused
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core this process may use (a container's quota counts), as memory allows.

    Small models keep a second torch thread mostly idle: two one-thread workers finish the suite in about 60% of
    the time one two-thread process takes.
    """
    from xdlearn.runtime import available_cores
    free = _free_memory_bytes()
    by_memory = max(1, free // MEMORY_PER_WORKER_BYTES) if free else available_cores()
    return max(1, min(available_cores(), by_memory))


def pytest_cmdline_main(config) -> None:
    """With ``-n``, keep each file on one worker: a lesson's cells share one kernel and must run in order there.

    pytest-xdist's default (``--dist load``) would spread a notebook's cells over the workers.
    """
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadfile"


def pytest_configure(config) -> None:
    """Share the cores among pytest-xdist's workers; keep the executed notebooks if ``XDLEARN_SAVE_EXECUTED`` asks."""
    share_cores_among_workers()
    folder = os.environ.get("XDLEARN_SAVE_EXECUTED")
    if folder:   # CI builds the book from them
        from tests.executed import register
        register(config, folder)


def share_cores_among_workers() -> None:
    """In a pytest-xdist worker, give torch (here and in the lessons' kernels) its share of the cores."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers <= 1:
        return
    from xdlearn.runtime import THREADS_VARIABLE, available_cores, set_threads   # torch: only in a worker
    if THREADS_VARIABLE not in os.environ:   # the kernels of this worker's lessons inherit it
        os.environ[THREADS_VARIABLE] = str(max(1, available_cores() // workers))
        set_threads()


def pytest_addoption(parser) -> None:
    """``--book-site`` runs the browser tests of the built book (book/_build/html), which the default run deselects."""
    parser.addoption(BOOK_SITE_OPTION, action="store_true", default=False,
                     help="run the tests marked book_site against the built book (build it first: book/build.py)")


def pytest_collection_modifyitems(config, items: list) -> None:
    """Give every notebook cell a patient wait for its outputs; deselect the book-site tests unless asked for.

    Deselected, not skipped: a run without ``--book-site`` reports them as deselected, so nobody mistakes them
    for passed; a run with it fails them loudly if the site has not been built.
    """
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = OUTPUT_TIMEOUT_S
    if config.getoption(BOOK_SITE_OPTION):
        return
    deselected = [item for item in items if item.get_closest_marker("book_site")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("book_site")]
