"""Settings for running the lessons as tests (nbval), and the opt-in browser tests of the built book.

With ``XDLEARN_SAVE_EXECUTED=<dir>`` every notebook the run executes is also saved there, executed, for
``book/build.py --executed <dir>`` (see tests/executed.py); without it nothing changes.
"""
from __future__ import annotations

import os

# nbval waits a hard-coded 5 s for each output message after a cell has finished
# (it has no option for it). On a busy 2-core machine the kernel can take longer to
# publish the last messages of a long training cell, and the cell then fails with
# "Timeout of 5 seconds exceeded waiting for output" although it ran correctly.
# The cell's own run time stays bounded by --nbval-cell-timeout.
OUTPUT_TIMEOUT_S = 120
BOOK_SITE_OPTION = "--book-site"


def pytest_addoption(parser) -> None:
    """``--book-site`` runs the browser tests of the built book (book/_build/html), which the default run deselects."""
    parser.addoption(BOOK_SITE_OPTION, action="store_true", default=False,
                     help="run the tests marked book_site against the built book (build it first: book/build.py)")


def pytest_configure(config) -> None:
    """Keep the executed notebooks when ``XDLEARN_SAVE_EXECUTED`` asks for them (CI builds the book from them)."""
    folder = os.environ.get("XDLEARN_SAVE_EXECUTED")
    if folder:
        from tests.executed import register
        register(config, folder)


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
