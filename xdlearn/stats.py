"""Comparisons over seeds: mean ± standard deviation, and whether a difference is larger than the noise.

One run per method shows one draw of the randomness (head initialisation, batch order, dropout); a claim that one
method beats another rests on several seeds and holds only where the difference of the means exceeds two standard
errors. A smaller difference is *within noise at this size*: not evidence of no effect.

Two standard errors is a lenient bar at three seeds: with equal true means, about one comparison in nine crosses it
by chance (the t distribution with 2-4 degrees of freedom has heavy tails). It is the least a lesson asks before
asserting; the verdict prints the margin so a reader sees how far past the bar a claim is.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MIN_SEEDS = 3
SIGNIFICANT = 2.0  # standard errors a difference must exceed before a lesson asserts it


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of repeated runs."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def fmt(values: Sequence[float], digits: int = 3, scale: float = 1.0, unit: str = "") -> str:
    """``"0.812 ± 0.010 (n=3)"``: how every comparison in the lessons is reported.

    ``scale`` and ``unit`` print shares as percentages (``scale=100, unit="%"``: ``"98.4 ± 0.5% (n=3)"``) or
    differences of accuracy as points, so a reader need not convert.
    """
    mean, sd = mean_sd(values)
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}{unit} (n={len(values)})"


def compare(a: Sequence[float], b: Sequence[float]) -> dict:
    r"""Difference of means ``a - b`` and its standard error :math:`\sqrt{s_a^2/n_a + s_b^2/n_b}`.

    ``z`` is the difference in standard errors; ``beyond_noise`` is ``|z| > 2``. Needs at least 3 runs a side.
    """
    if min(len(a), len(b)) < MIN_SEEDS:
        raise ValueError(f"compare() needs at least {MIN_SEEDS} runs per side, got {len(a)} and {len(b)}")
    (mean_a, sd_a), (mean_b, sd_b) = mean_sd(a), mean_sd(b)
    se = float(np.sqrt(sd_a ** 2 / len(a) + sd_b ** 2 / len(b)))
    difference = mean_a - mean_b
    z = _in_standard_errors(difference, se)
    return {"difference": difference, "se": se, "z": z, "beyond_noise": bool(abs(z) > SIGNIFICANT)}


def _in_standard_errors(distance: float, se: float) -> float:
    """``distance / se``; with identical runs (``se`` 0) any distance at all is beyond noise, and none is 0."""
    if se > 0:
        return float(distance / se)
    return float(np.sign(distance)) * np.inf if distance else 0.0


def above(values: Sequence[float], bar: float) -> dict:
    """How far the mean of repeated runs lies above a fixed ``bar`` (e.g. 95% of a teacher's accuracy), in standard errors.

    ``se`` is the standard error of the mean, ``z`` the distance ``mean - bar`` in them; ``beyond_noise`` is ``z > 2``:
    the mean clears the bar by more than the seeds' noise. Needs at least 3 runs.
    """
    if len(values) < MIN_SEEDS:
        raise ValueError(f"above() needs at least {MIN_SEEDS} runs, got {len(values)}")
    mean, sd = mean_sd(values)
    se = sd / float(np.sqrt(len(values)))
    z = _in_standard_errors(mean - bar, se)
    return {"mean": mean, "se": se, "z": z, "beyond_noise": bool(z > SIGNIFICANT)}


def verdict(a: Sequence[float], b: Sequence[float], name_a: str, name_b: str, scale: float = 100.0,
            unit: str = " points", more: str = "beats", digits: int = 1) -> str:
    """One sentence: the difference with its standard error, and whether it is beyond noise or within it.

    ``more`` says what a larger value means (``"beats"`` for accuracy, ``"is farther apart than"`` for a distance).
    """
    c = compare(a, b)
    said = (f"{name_a} {more} {name_b}" if c["difference"] > 0 else f"{name_b} {more} {name_a}") \
        if c["beyond_noise"] else f"{name_a} vs {name_b}: within noise at this size"
    return (f"{said} ({c['difference'] * scale:+.{digits}f} ± {c['se'] * scale:.{digits}f}{unit}, "
            f"{abs(c['z']):.1f} standard errors)")
