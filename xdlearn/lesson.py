"""What every lesson's first cell does: seed, threads, quiet logs, and the size configuration.

Notebooks run in their default (teaching) configuration; ``XDLEARN_QUICK=1`` shrinks sizes for a
smoke run (the claims a notebook asserts are only checked at the teaching size).
"""
from __future__ import annotations

import os
import warnings

from .runtime import release_memory, set_seed, set_threads  # noqa: F401  (release_memory, set_seed: for lessons)


def quick() -> bool:
    """True when ``XDLEARN_QUICK`` asks for a small smoke run instead of the teaching configuration."""
    return os.environ.get("XDLEARN_QUICK", "0").lower() not in ("", "0", "false", "no")


def pick(teaching, smoke):
    """The teaching value, or the smoke-run value under ``XDLEARN_QUICK=1``."""
    return smoke if quick() else teaching


def setup(seed: int = 0) -> dict:
    """Seed everything, use the cores available, silence library chatter; returns what was set."""
    import datasets
    from transformers.utils import logging as hf_logging
    set_seed(seed)
    threads = set_threads()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # weight-loading bars are noise in a lesson
    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*TypedStorage.*")
    return {"seed": seed, "threads": threads, "quick": quick()}


def check(claim: bool, message: str) -> str:
    """Assert a claim the lesson's prose makes; at smoke size (``XDLEARN_QUICK``) only report it.

    Returns the message so the check cell shows which claim was verified.
    """
    if quick():
        status = "holds" if claim else "does NOT hold"
        return f"(smoke size, not enforced) {message}: {status}"
    assert claim, f"claim no longer holds: {message}"
    return f"checked: {message}"
