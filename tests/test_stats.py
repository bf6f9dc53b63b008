"""Seed comparisons: the arithmetic, and the refusal to compare fewer than 3 runs."""
from __future__ import annotations

import math

import numpy as np
import pytest

from xdlearn import stats


def test_mean_sd_and_format_use_the_sample_standard_deviation():
    assert stats.mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert stats.fmt([0.81, 0.82, 0.83]) == "0.820 ± 0.010 (n=3)"
    assert stats.fmt([0.975, 0.984, 0.993], digits=1, scale=100, unit="%") == "98.4 ± 0.9% (n=3)"


def test_compare_gives_the_standard_error_of_a_difference_of_means():
    c = stats.compare([0.80, 0.82, 0.84], [0.70, 0.71, 0.72])
    assert c["difference"] == pytest.approx(0.11)
    assert c["se"] == pytest.approx(math.sqrt(0.02 ** 2 / 3 + 0.01 ** 2 / 3))
    assert c["beyond_noise"] and c["z"] > 2
    close = stats.compare([0.80, 0.84, 0.82], [0.81, 0.79, 0.83])
    assert not close["beyond_noise"]
    assert "within noise" in stats.verdict([0.80, 0.84, 0.82], [0.81, 0.79, 0.83], "A", "B")
    assert stats.verdict([0.80, 0.82, 0.84], [0.70, 0.71, 0.72], "A", "B").startswith("A beats B (+11.0 ± 1.3 points")


def test_identical_runs_and_too_few_seeds():
    assert stats.compare([0.5] * 3, [0.5] * 3)["z"] == 0.0
    assert stats.compare([0.6] * 3, [0.5] * 3)["beyond_noise"] and stats.compare([0.6] * 3, [0.5] * 3)["z"] == np.inf
    assert stats.verdict([0.70, 0.71, 0.72], [0.80, 0.82, 0.84], "A", "B").startswith("B beats A (-11.0")
    with pytest.raises(ValueError, match="at least 3"):
        stats.compare([0.8, 0.9], [0.7, 0.6, 0.5])


def test_above_measures_a_mean_against_a_fixed_bar_in_standard_errors():
    a = stats.above([0.97, 0.98, 0.99], 0.95)
    assert a["mean"] == pytest.approx(0.98) and a["se"] == pytest.approx(0.01 / math.sqrt(3))
    assert a["z"] == pytest.approx(0.03 / (0.01 / math.sqrt(3))) and a["beyond_noise"]
    assert not stats.above([0.93, 0.97, 1.01], 0.95)["beyond_noise"]      # mean 0.97, but the spread is as large
    assert not stats.above([0.90, 0.91, 0.92], 0.95)["beyond_noise"]      # below the bar: never "above" it
    assert stats.above([0.75] * 3, 0.5)["z"] == np.inf and stats.above([0.5] * 3, 0.5)["z"] == 0.0   # exact in binary
    with pytest.raises(ValueError, match="at least 3"):
        stats.above([0.99, 0.98], 0.95)
