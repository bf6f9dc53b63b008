"""Distillation losses against hand-computed values, caching, augmentation, students, widgets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xdlearn import data, distill, students, train
from xdlearn.infer import predict
from conftest import make_tiny_model, toy_sentences


def test_soft_target_loss_by_hand():
    s, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    T = 2.0
    ps = torch.softmax(s / T, -1)[0]
    pt = torch.softmax(t / T, -1)[0]
    kl = sum(pt[i] * math.log(pt[i] / ps[i]) for i in range(2))
    assert distill.soft_target_loss(s, t, T).item() == pytest.approx(T * T * kl.item(), rel=1e-5)
    assert distill.soft_target_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-7)


def test_kl_uses_batchmean_not_elementwise_mean():
    s = torch.tensor([[2.0, 0.0, -1.0]] * 4)
    t = torch.tensor([[0.0, 1.0, 0.5]] * 4)
    one = distill.soft_target_loss(s[:1], t[:1], 1.0)
    assert distill.soft_target_loss(s, t, 1.0).item() == pytest.approx(one.item(), rel=1e-6)  # per example


def test_large_temperature_limit_is_logit_matching():
    # as T -> inf, T^2 KL -> (1 / 2K) * sum((z_s - z_t)^2) for zero-mean logits (Hinton et al. 2015)
    s = torch.tensor([[0.3, -0.1, -0.2]])
    t = torch.tensor([[-0.4, 0.5, -0.1]])
    limit = ((s - t) ** 2).sum().item() / (2 * 3)
    assert distill.soft_target_loss(s, t, 20.0).item() == pytest.approx(limit, rel=1e-2)
    assert distill.soft_target_loss(s.double(), t.double(), 200.0).item() == pytest.approx(limit, rel=1e-3)


def batch_of(tokenizer, texts, labels):
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor(labels)}


def test_alpha_mixes_soft_and_hard_losses(tokenizer):
    teacher, student = make_tiny_model(seed=1), make_tiny_model(seed=2)
    student.eval()  # no dropout: the same forward pass every call
    batch = batch_of(tokenizer, ["good film", "bad phone"], [1, 0])
    soft_only = distill.Distillation(teacher, temperature=3.0, alpha=1.0)(student, batch)
    hard_only = distill.Distillation(teacher, temperature=3.0, alpha=0.0)(student, batch)
    half = distill.Distillation(teacher, temperature=3.0, alpha=0.5)(student, batch)
    ce = torch.nn.functional.cross_entropy(student(**{k: v for k, v in batch.items() if k != "labels"}).logits,
                                           batch["labels"])
    assert hard_only["loss"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert half["loss"].item() == pytest.approx(0.5 * soft_only["loss"].item() + 0.5 * ce.item(), rel=1e-5)
    assert list(distill.Distillation(teacher).parameters()) == []  # the teacher is not trained
    with pytest.raises(ValueError, match="alpha"):
        distill.Distillation(teacher, alpha=1.5)
    unlabeled = {k: v for k, v in batch.items() if k != "labels"}
    with pytest.raises(ValueError, match="unlabeled transfer set"):
        distill.Distillation(teacher, alpha=0.5)(student, unlabeled)


def test_cached_logits_give_the_same_loss_as_the_live_teacher(tokenizer, tmp_path):
    teacher, student = make_tiny_model(seed=1), make_tiny_model(seed=2)
    student.eval()
    ds = toy_sentences(20)
    cached = distill.cache_teacher_logits(teacher, ds, tokenizer, tmp_path)
    batch = next(iter(data.make_loader(cached, tokenizer, batch_size=20, shuffle=False)))
    live = distill.Distillation(teacher, alpha=1.0)(student, {k: v for k, v in batch.items() if k != "teacher_logits"})
    from_cache = distill.Distillation(None, alpha=1.0)(student, batch)
    assert from_cache["loss"].item() == pytest.approx(live["loss"].item(), rel=1e-5)


def test_cache_is_reused_and_invalidated_by_teacher_or_data_changes(tokenizer, tmp_path, monkeypatch):
    teacher = make_tiny_model(seed=1)
    ds = toy_sentences(12)
    first = distill.cache_teacher_logits(teacher, ds, tokenizer, tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    calls = []
    real_predict = distill.predict
    monkeypatch.setattr(distill, "predict", lambda *a, **k: calls.append(1) or real_predict(*a, **k))
    again = distill.cache_teacher_logits(teacher, ds, tokenizer, tmp_path)
    assert calls == [] and list(again["teacher_logits"]) == list(first["teacher_logits"])
    with torch.no_grad():
        teacher.classifier.bias.add_(1.0)  # a changed teacher
    changed = distill.cache_teacher_logits(teacher, ds, tokenizer, tmp_path)
    assert calls == [1] and changed["teacher_logits"][0] != first["teacher_logits"][0]
    distill.cache_teacher_logits(teacher, toy_sentences(12, seed=9), tokenizer, tmp_path)  # changed data
    assert calls == [1, 1] and len(list(tmp_path.glob("*.npy"))) == 3


def test_hidden_state_matching_with_projection_and_cosine():
    match = distill.HiddenStateMatching({1: 2}, student_dim=4, teacher_dim=8, loss="mse")
    assert len(list(match.parameters())) == 2  # a learned projection, since widths differ
    mask = torch.ones(1, 3)
    s = [torch.zeros(1, 3, 4), torch.randn(1, 3, 4)]
    t = [None, None, torch.randn(1, 3, 8)]
    with torch.no_grad():
        match.project["1"].weight.zero_()
        match.project["1"].bias.zero_()
    assert match(s, t, mask).item() == pytest.approx((t[2] ** 2).mean().item(), rel=1e-5)
    same = distill.HiddenStateMatching({0: 0}, 4, 4, loss="cosine")
    h = torch.randn(2, 5, 4)
    assert same([h], [2 * h], torch.ones(2, 5)).item() == pytest.approx(0.0, abs=1e-6)
    # padded positions do not count
    masked = torch.tensor([[1, 1, 0]])
    noisy = torch.zeros(1, 3, 4)
    noisy[0, 2] = 100.0
    assert distill.HiddenStateMatching({0: 0}, 4, 4)([noisy], [torch.zeros(1, 3, 4)], masked).item() == 0.0


def test_attention_matching_is_zero_for_identical_maps_and_averages_heads():
    a = torch.softmax(torch.randn(2, 4, 3, 3), -1)
    match = distill.AttentionMatching({0: 1})
    assert match([a], [None, a], torch.ones(2, 3)).item() == pytest.approx(0.0, abs=1e-7)
    # a 2-head student whose heads average to the 4-head teacher's average matches it exactly
    student = a.mean(1, keepdim=True).expand(-1, 2, -1, -1)
    assert match([student], [None, a], torch.ones(2, 3)).item() == pytest.approx(0.0, abs=1e-7)
    uniform = torch.full((2, 2, 3, 3), 1 / 3)
    expected = ((uniform.mean(1) - a.mean(1)) ** 2).mean().item()
    assert match([uniform], [None, a], torch.ones(2, 3)).item() == pytest.approx(expected, rel=1e-5)


def test_distillation_with_hidden_and_attention_losses_trains(tokenizer, toy):
    teacher = make_tiny_model(seed=1)
    train.fit(teacher, toy["train"], tokenizer=tokenizer, epochs=6, lr=2e-3, batch_size=16, progress=False)
    student = students.student_from_teacher(teacher, [1])
    objective = distill.Distillation(teacher, temperature=2.0, alpha=0.5,
                                     hidden=distill.HiddenStateMatching({1: 2}, 32, 32),
                                     attention=distill.AttentionMatching({0: 1}))
    history = train.fit(student, toy["train"], objective, tokenizer=tokenizer, epochs=3, lr=2e-3,
                        batch_size=16, progress=False, eval_data=toy["test"])
    assert {"soft_loss", "hard_loss", "hidden_loss", "attention_loss"} <= set(history.steps[0])
    assert history.steps[-1]["hidden_loss"] < history.steps[0]["hidden_loss"]
    assert history.last["validation/accuracy"] > 0.8


def test_augmentation_masks_and_samples_ngrams():
    ds = toy_sentences(30)
    out = distill.augment(ds, copies=3, p_mask=0.3, p_ngram=0.5, seed=0)
    assert out.column_names == ["text", "domain"] and 30 < len(out) <= 90
    assert any("[MASK]" in t for t in out["text"])
    assert any(len(t.split()) <= 5 for t in out["text"])
    assert list(out["text"]) == list(distill.augment(ds, copies=3, p_mask=0.3, p_ngram=0.5, seed=0)["text"])


def test_label_with_teacher_adds_logits_and_argmax_labels(tokenizer, tmp_path):
    teacher = make_tiny_model(seed=1)
    pool = data.unlabeled(toy_sentences(16))
    labelled = distill.label_with_teacher(teacher, pool, tokenizer, tmp_path)
    logits = np.asarray(labelled["teacher_logits"])
    assert list(labelled["label"]) == logits.argmax(-1).tolist()


def test_soft_targets_by_class_averages_each_true_class_and_flattens_with_temperature():
    logits = np.array([[4.0, 1.0, -2.0], [3.0, 2.0, -1.0], [-1.0, 0.5, 3.0], [0.0, 2.0, 0.0]])
    labels = [0, 0, 2, 1]
    table = distill.soft_targets_by_class(logits, labels)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert np.allclose(table[0], probs[:2].mean(0)) and np.allclose(table[2], probs[2])
    assert np.allclose(table.sum(1), 1.0)
    warm = distill.soft_targets_by_class(logits, labels, temperature=4.0)
    assert warm[0, 2] > table[0, 2] and warm[0, 0] < table[0, 0]   # a higher T moves mass to the other classes


def test_soft_targets_by_class_names_a_class_without_sentences_and_bad_labels():
    logits = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"classes without a sentence: \[1\]"):
        distill.soft_targets_by_class(logits, [0, 2, 2])
    with pytest.raises(ValueError, match=r"labels seen: \[0, 1, 2, 5\]"):
        distill.soft_targets_by_class(np.zeros((4, 3)), [0, 1, 2, 5])
    with pytest.raises(ValueError, match="one label per sentence"):
        distill.soft_targets_by_class(logits, [0, 1])


def test_distil_seeds_gives_one_reproducible_run_per_seed(tokenizer, toy, tmp_path):
    teacher = make_tiny_model(seed=1)
    transfer = distill.label_with_teacher(teacher, data.unlabeled(toy["train"].select(range(64))), tokenizer, tmp_path)
    made = []

    def objective():
        made.append(distill.Distillation(temperature=2.0, alpha=1.0))
        return made[-1]

    runs = distill.distil_seeds(teacher, tokenizer, "cnn", transfer, toy["test"], [0, 1, 0], objective, epochs=1,
                                keep_first=True, batch_size=16)
    assert len(runs.logits) == len(runs.histories) == len(made) == 3 and len({id(o) for o in made}) == 3
    assert runs.logits[0].shape == (len(toy["test"]), 2)
    np.testing.assert_allclose(runs.logits[2], runs.logits[0], rtol=1e-5, atol=1e-6)   # a seed repeats
    assert not np.allclose(runs.logits[1], runs.logits[0], atol=1e-3)                  # another seed is another draw
    np.testing.assert_allclose(predict(runs.model, toy["test"], tokenizer), runs.logits[0], rtol=1e-5, atol=1e-6)
    assert max(row["lr"] for row in runs.histories[0].steps) == pytest.approx(students.learning_rate("cnn"))
    scores = runs.scores(toy["test"]["label"], runs.logits[0])
    same = runs.logits[1].argmax(-1) == runs.logits[0].argmax(-1)
    assert scores["agreement"][0] == 1.0 and scores["agreement"][1] == pytest.approx(same.mean())
    assert scores["accuracy"][1] == pytest.approx(np.mean(runs.logits[1].argmax(-1) == np.array(toy["test"]["label"])))
    assert all(0.0 <= e <= 1.0 for e in scores["ECE"]) and len(scores["ECE"]) == 3
    without = distill.distil_seeds(teacher, tokenizer, "1-layer", transfer, toy["test"], [0], objective, epochs=1,
                                   lr=3e-4, batch_size=16)
    assert without.model is None and max(row["lr"] for row in without.histories[0].steps) == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="at least one seed"):
        distill.distil_seeds(teacher, tokenizer, "cnn", transfer, toy["test"], [], objective, epochs=1)
