"""Settings for running the lessons as tests (nbval)."""
from __future__ import annotations

# nbval waits a hard-coded 5 s for each output message after a cell has finished
# (it has no option for it). On a busy 2-core machine the kernel can take longer to
# publish the last messages of a long training cell, and the cell then fails with
# "Timeout of 5 seconds exceeded waiting for output" although it ran correctly.
# The cell's own run time stays bounded by --nbval-cell-timeout.
OUTPUT_TIMEOUT_S = 120


def pytest_collection_modifyitems(items: list) -> None:
    """Give every notebook cell a patient wait for its outputs."""
    for item in items:
        if hasattr(item, "output_timeout"):
            item.output_timeout = OUTPUT_TIMEOUT_S
