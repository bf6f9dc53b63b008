"""How good is a model, and where: accuracy, macro-F1, calibration, confusion, domains, transfer.

The metrics themselves live in ``metrics`` (plain functions of logits and labels) and the run of a model in
``infer.predict``; both sit below ``train``, which scores every epoch with them, so neither ``train`` nor
``evaluate`` imports the other. This module builds on them: a model on a dataset or several domains, transfer
matrices, temperature scaling, latency. It is also the one evaluation namespace of the lessons, so the
metrics and ``predict`` are named here too (``__all__``): ``evaluate.accuracy``, ``evaluate.predict``.
"""
from __future__ import annotations

import time
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from .data import tokenize
from .infer import predict
from .metrics import (accuracy, confusion_matrix, expected_calibration_error, macro_f1, metrics_from_logits,
                      softmax)
from .runtime import release_memory

__all__ = ["accuracy", "agreement", "confusion_matrix", "evaluate", "evaluate_domains", "expected_calibration_error",
           "fit_temperature", "from_confusions", "latency", "macro_f1", "metrics_from_logits",
           "off_diagonal_summary", "predict", "softmax", "speedup", "transfer_matrix"]


def fit_temperature(logits: np.ndarray, labels: Sequence[int], max_iter: int = 200) -> float:
    """Temperature scaling (Guo et al. 2017): the T for which softmax(logits / T) best fits held-out labels (NLL).

    T > 1 softens an over-confident model, T < 1 sharpens an under-confident one; predictions do not change.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(list(labels)), dtype=torch.long)
    if len(z) != len(y) or len(y) == 0:
        raise ValueError(f"fit_temperature needs as many labels as rows of logits, got {len(y)} and {len(z)}")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss
    optimizer.step(nll)
    return float(log_t.detach().exp())


def evaluate(model: nn.Module, data: Dataset, tokenizer=None, batch_size: int = 64,
             max_length: int = 128) -> dict:
    """Run ``model`` on a labelled Dataset and return its metrics."""
    if "label" not in data.column_names:
        raise ValueError("evaluate() needs a 'label' column; unlabeled text can only be predicted")
    return metrics_from_logits(predict(model, data, tokenizer, batch_size, max_length), list(data["label"]))


def evaluate_domains(model: nn.Module, domains: Mapping[str, Dataset], tokenizer=None,
                     batch_size: int = 64, max_length: int = 128) -> dict[str, dict]:
    """The same model evaluated on several domains: ``{domain: metrics}``."""
    return {name: evaluate(model, ds, tokenizer, batch_size, max_length) for name, ds in domains.items()}


def agreement(logits_a: np.ndarray, logits_b: np.ndarray) -> float:
    """How often two models predict the same class (e.g. a student and its teacher)."""
    return float((np.asarray(logits_a).argmax(-1) == np.asarray(logits_b).argmax(-1)).mean())


def transfer_matrix(train_fn: Callable[[str], tuple], train_sets: Mapping[str, Dataset],
                    test_sets: Mapping[str, Dataset], metric: str = "accuracy"):
    """Train on each source domain, test on every target: a DataFrame, rows = source, columns = target.

    ``train_fn(source)`` returns ``(model, tokenizer)`` trained on ``train_sets[source]``; the
    diagonal is in-domain performance and the rest of each row shows what the domain gap costs.
    """
    import pandas as pd
    rows = {}
    for source in train_sets:
        model, tokenizer = train_fn(source)
        scores = evaluate_domains(model, test_sets, tokenizer)
        rows[source] = {target: scores[target][metric] for target in test_sets}
        del model  # before the next model trains: never two in memory at once
        release_memory()
    frame = pd.DataFrame(rows).T
    frame.index.name, frame.columns.name = "trained on", "tested on"
    return frame


def from_confusions(frame, statistic: str = "accuracy", positive: int = 1):
    """Turn a transfer matrix of confusion matrices (``metric="confusion"``) into one of numbers.

    ``statistic``: ``accuracy``; ``predicted positive`` (share of test rows predicted as class
    ``positive``: set against the true share, it shows which prior a model brought from its
    training domain); ``true positive`` (the true share, the same down each column).
    """
    statistics = {"accuracy": lambda m: np.trace(m) / m.sum(),
                  "predicted positive": lambda m: m[:, positive].sum() / m.sum(),
                  "true positive": lambda m: m[positive].sum() / m.sum()}
    if statistic not in statistics:
        raise ValueError(f"statistic must be one of {list(statistics)}, got {statistic!r}")

    def one(confusion) -> float:
        return float(statistics[statistic](np.asarray(confusion, dtype=float)))
    out = (frame.map(one) if hasattr(frame, "map") else frame.applymap(one)).astype(float)
    out.index.name, out.columns.name = frame.index.name, frame.columns.name
    return out


def off_diagonal_summary(frame):
    """Per source domain: in-domain score, mean and worst score elsewhere, and the gap between them."""
    import pandas as pd
    values = frame.to_numpy(dtype=float)
    rows = {}
    for i, source in enumerate(frame.index):
        j = list(frame.columns).index(source)
        others = np.delete(values[i], j)
        rows[source] = {"in-domain": values[i, j], "mean elsewhere": others.mean(),
                        "worst elsewhere": others.min(), "gap to mean": values[i, j] - others.mean()}
    out = pd.DataFrame(rows).T
    out.index.name = frame.index.name
    return out


MILLISECONDS = 1000.0
WARM_UP_BATCHES = 3   # untimed batches first: the first calls of a model pay for allocations and kernel choice


def latency(model: nn.Module, data: Dataset, tokenizer=None, batch_size: int = 32,
            repeats: int = 3, max_length: int = 128) -> dict:
    """Measured inference speed of ``model`` over ``data`` in batches of ``batch_size``: the fastest of ``repeats``.

    ``batch_size=1`` is the latency a deployed classifier sees, one sentence per call (``ms_per_sentence``);
    a large batch is throughput (``examples_per_second``). The text is tokenised once before the clock
    starts: the model is what differs between a teacher and its students, and timing the shared tokenizer
    too would shrink every speed-up toward 1. The fastest pass is the one least disturbed by the rest of
    the machine; to compare two models, ``speedup`` alternates them, so both see the same disturbance.
    """
    data = _timing_data(data, tokenizer, max_length)
    _warm_up(model, data, tokenizer, batch_size, max_length)
    seconds = min(_timed_pass(model, data, tokenizer, batch_size, max_length) for _ in range(max(1, repeats)))
    return _speed(seconds, len(data), batch_size)


def speedup(model: nn.Module, baseline: nn.Module, data: Dataset, tokenizer=None, batch_size: int = 32,
            repeats: int = 3, max_length: int = 128, baseline_tokenizer=None) -> dict:
    """How many times faster ``model`` predicts ``data`` than ``baseline`` (a student and its teacher).

    The two are timed in turn, pass after pass, and each keeps its fastest: a burst of load elsewhere on
    the machine then slows both alike, so the ratio holds steadier than two separate ``latency`` calls.
    ``baseline_tokenizer`` is for a baseline that reads other tokens (an MPNet teacher of a MiniLM student);
    by default both use ``tokenizer``. Returns ``speedup`` and both models' ``latency`` figures.
    """
    pair = {"model": (model, tokenizer), "baseline": (baseline, baseline_tokenizer or tokenizer)}
    inputs = {name: _timing_data(data, tok, max_length) for name, (_, tok) in pair.items()}
    for name, (each, tok) in pair.items():
        _warm_up(each, inputs[name], tok, batch_size, max_length)
    times: dict[str, list[float]] = {name: [] for name in pair}
    for _ in range(max(1, repeats)):
        for name, (each, tok) in pair.items():
            times[name].append(_timed_pass(each, inputs[name], tok, batch_size, max_length))
    speeds = {name: _speed(min(passes), len(data), batch_size) for name, passes in times.items()}
    return {"speedup": speeds["model"]["examples_per_second"] / speeds["baseline"]["examples_per_second"],
            **speeds}


def _timing_data(data: Dataset, tokenizer, max_length: int) -> Dataset:
    """``data`` tokenised before any clock starts: timing measures the model, not the shared tokenizer."""
    if "input_ids" not in data.column_names:
        if tokenizer is None:
            raise ValueError("latency needs a tokenizer for a dataset that is not tokenised")
        data = tokenize(data, tokenizer, max_length)
    return data


def _warm_up(model: nn.Module, data: Dataset, tokenizer, batch_size: int, max_length: int) -> None:
    """A few untimed batches, so no timed pass pays for the model's first calls."""
    predict(model, data.select(range(min(len(data), WARM_UP_BATCHES * batch_size))), tokenizer, batch_size, max_length)


def _timed_pass(model: nn.Module, data: Dataset, tokenizer, batch_size: int, max_length: int) -> float:
    """Seconds one ``predict`` pass over ``data`` takes."""
    started = time.perf_counter()
    predict(model, data, tokenizer, batch_size, max_length)
    return time.perf_counter() - started


def _speed(seconds: float, n: int, batch_size: int) -> dict:
    """A timed pass as sentences per second and milliseconds per sentence."""
    return {"examples_per_second": n / seconds, "ms_per_sentence": MILLISECONDS * seconds / n,
            "seconds": seconds, "n": n, "batch_size": batch_size}
