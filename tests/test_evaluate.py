"""Metrics against hand-computed values, prediction order, domains and the transfer matrix."""
from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from types import SimpleNamespace

from xdlearn import evaluate
from conftest import toy_sentences


def test_accuracy_f1_and_confusion_by_hand():
    labels, preds = [0, 0, 0, 1, 1, 2], [0, 1, 0, 1, 2, 2]
    assert evaluate.accuracy(labels, preds) == pytest.approx(4 / 6)
    assert evaluate.confusion_matrix(labels, preds, 3).tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # per class F1: c0 = 2*1*(2/3)/(1+2/3) = 0.8; c1 = 0.5; c2 = 2*(1/2)*1/(1.5) = 2/3
    assert evaluate.macro_f1(labels, preds, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # a majority guesser has high accuracy but low macro-F1
    assert evaluate.macro_f1([0] * 9 + [1], [0] * 10, 2) == pytest.approx((2 * 0.9 / 1.9) / 2)


def test_expected_calibration_error():
    # confidence 0.8 in all rows, right in 4 of 5 -> perfectly calibrated
    probs = np.array([[0.8, 0.2]] * 5)
    assert evaluate.expected_calibration_error(probs, [0, 0, 0, 0, 1]) == pytest.approx(0.0)
    # confidence 0.9, always wrong -> ECE 0.9
    assert evaluate.expected_calibration_error(np.array([[0.1, 0.9]] * 4), [0] * 4) == pytest.approx(0.9)
    # two bins: (0.6 conf, 100% right) and (0.95 conf, 50% right)
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [0.05, 0.95], [0.05, 0.95]])
    assert evaluate.expected_calibration_error(probs, [0, 0, 1, 0]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.45)


def test_softmax_is_stable_and_tempered():
    p = evaluate.softmax(np.array([[1000.0, 0.0]]))
    assert np.allclose(p, [[1.0, 0.0]])
    hot, warm = evaluate.softmax(np.array([[2.0, 0.0]])), evaluate.softmax(np.array([[2.0, 0.0]]), 4.0)
    assert warm[0, 0] < hot[0, 0] and warm[0, 0] > 0.5


class LengthModel(torch.nn.Module):
    """Logit 0 = number of real tokens: shows whether predictions come back in dataset order."""

    def forward(self, input_ids, attention_mask, **_):
        n = attention_mask.sum(-1, keepdim=True).float()
        return SimpleNamespace(logits=torch.cat([n, -n], dim=-1))


def test_predict_returns_rows_in_dataset_order(tokenizer):
    ds = toy_sentences(70)
    logits = evaluate.predict(LengthModel(), ds, tokenizer, batch_size=8)
    expected = [len(tokenizer(t)["input_ids"]) for t in ds["text"]]
    assert logits[:, 0].tolist() == expected


def test_evaluate_domains_and_transfer_matrix(tokenizer):
    sets = {"a": toy_sentences(20, seed=1), "b": toy_sentences(30, seed=2)}
    trained, earlier = [], []
    def train_fn(source):
        trained.append(source)
        assert all(ref() is None for ref in earlier), "the previous model is still in memory"
        model = LengthModel()  # always predicts class 0
        earlier.append(weakref.ref(model))
        return model, tokenizer
    frame = evaluate.transfer_matrix(train_fn, sets, sets)
    assert trained == ["a", "b"]
    assert frame.shape == (2, 2) and frame.index.name == "trained on"
    assert frame.loc["a", "b"] == pytest.approx(0.5)  # toy labels alternate
    scores = evaluate.evaluate_domains(LengthModel(), sets, tokenizer)
    assert scores["a"]["n"] == 20 and scores["a"]["confusion"] == [[10, 0], [10, 0]]
    assert evaluate.agreement(np.array([[1, 0], [0, 1]]), np.array([[2, 1], [1, 0]])) == 0.5


def test_from_confusions_and_off_diagonal_summary():
    conf = pd.DataFrame({"a": {"a": [[8, 2], [0, 10]], "b": [[5, 5], [0, 10]]},
                         "b": {"a": [[4, 0], [4, 2]], "b": [[4, 0], [0, 6]]}})
    acc = evaluate.from_confusions(conf)
    assert acc.loc["a", "a"] == pytest.approx(0.9) and acc.loc["b", "b"] == pytest.approx(1.0)
    assert evaluate.from_confusions(conf, "predicted positive").loc["b", "a"] == pytest.approx(15 / 20)
    assert evaluate.from_confusions(conf, "true positive").loc["a", "b"] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="statistic"):
        evaluate.from_confusions(conf, "recall")
    summary = evaluate.off_diagonal_summary(acc)
    assert summary.loc["a", "in-domain"] == pytest.approx(0.9)
    assert summary.loc["a", "gap to mean"] == pytest.approx(0.9 - acc.loc["a", "b"])


def test_latency_tokenises_once_outside_the_timed_runs(monkeypatch, tiny_model, tokenizer):
    from datasets import Dataset
    calls = []
    real = evaluate.tokenize
    monkeypatch.setattr(evaluate, "tokenize", lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = Dataset.from_dict({"text": ["good film", "bad one", "fine"] * 10, "label": [1, 0, 1] * 10})
    result = evaluate.latency(tiny_model, ds, tokenizer, batch_size=8, repeats=3)
    assert calls == [1] and result["n"] == 30 and result["examples_per_second"] > 0
    with pytest.raises(ValueError, match="tokenizer"):
        evaluate.latency(tiny_model, ds)


def test_temperature_scaling_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 2))
    true_t = 2.5
    p = np.exp(logits / true_t) / np.exp(logits / true_t).sum(1, keepdims=True)
    labels = (rng.random(4000) < p[:, 1]).astype(int)       # labels drawn from the softened probabilities
    assert evaluate.fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.1)
    with pytest.raises(ValueError, match="as many labels"):
        evaluate.fit_temperature(logits, labels[:10])
