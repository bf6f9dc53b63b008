"""The inference loop's batches and the students' unpacked paths: the same numbers as the row-by-row collator
and the packed LSTM they replace, for sentences of one length and of many."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_tiny_model, toy_sentences
from xdlearn import data, evaluate, flops, infer, students
from xdlearn.objectives import model_inputs

ATOL = 1e-6   # the fused LSTM kernel adds in another order than the packed one: equal to float rounding


def collated_batches(ds, tokenizer, batch_size: int) -> tuple[list[dict], list[int]]:
    """The batches and row order of ``make_loader(shuffle=False)``: what the inference loop ran before."""
    loader = data.make_loader(ds, tokenizer, batch_size=batch_size, shuffle=False)
    return list(loader), [i for batch in loader.batch_sampler for i in batch]


def collated_predict(model: nn.Module, ds, tokenizer, batch_size: int) -> np.ndarray:
    """Logits through ``PadCollator`` batches, in dataset order: the reference the fast path must equal."""
    batches, order = collated_batches(ds, tokenizer, batch_size)
    model.eval()
    with torch.no_grad():
        stacked = torch.cat([model(**model_inputs(batch)).logits for batch in batches]).numpy()
    restored = np.empty_like(stacked)
    restored[order] = stacked
    return restored


def packed_bilstm_pool(student: students.BiLSTMStudent, input_ids, attention_mask) -> torch.Tensor:
    """The BiLSTM student's max-pooled states the packed way (pack_padded_sequence, enforce_sorted=False)."""
    lengths = attention_mask.sum(1).clamp(min=1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(student.embed(input_ids), lengths, batch_first=True,
                                               enforce_sorted=False)
    states, _ = nn.utils.rnn.pad_packed_sequence(student.lstm(packed)[0], batch_first=True,
                                                 total_length=input_ids.shape[1])
    return states.masked_fill(attention_mask.unsqueeze(-1) == 0, float("-inf")).max(dim=1).values


@pytest.mark.parametrize("batch_size", [1, 5, 16])
def test_sorted_batches_equal_the_collated_ones(tokenizer, batch_size):
    ds = data.tokenize(toy_sentences(53, seed=3), tokenizer)
    shuffled = ds.select(list(reversed(range(len(ds)))))  # an index mapping, as split() leaves one
    expected, order = collated_batches(shuffled, tokenizer, batch_size)
    fast = data.SortedBatches(shuffled, batch_size, tokenizer.pad_token_id)
    assert fast.order == order and len(fast) == len(expected)
    for old, new in zip(expected, fast):
        assert set(new) == set(data.INPUT_COLUMNS) and "labels" in old  # inputs only, no labels
        for key, value in new.items():
            assert value.dtype == old[key].dtype and torch.equal(value, old[key]), key
    lengths = [len(ids) for ids in shuffled["input_ids"]]
    assert any(len({lengths[i] for i in rows}) > 1 for rows in fast.batches) == (batch_size > 1)  # padding was tested


def test_a_batch_of_one_length_is_a_view_and_a_mixed_one_is_padded(tokenizer):
    ds = data.tokenize(toy_sentences(40, seed=4), tokenizer)
    single = data.SortedBatches(ds, 1, tokenizer.pad_token_id)
    storage = single.columns["input_ids"].untyped_storage().data_ptr()
    for batch, rows in zip(single, single.batches):
        assert batch["input_ids"][0].tolist() == ds[rows[0]]["input_ids"] and batch["attention_mask"].all()
        assert batch["input_ids"].untyped_storage().data_ptr() == storage  # nothing copied
    mixed = next(iter(data.SortedBatches(ds, 40, tokenizer.pad_token_id)))
    lengths = mixed["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()
    assert (mixed["input_ids"][mixed["attention_mask"] == 0] == tokenizer.pad_token_id).all()


@pytest.mark.parametrize("kind", ["teacher", "bilstm", "cnn", "1-layer"])
def test_predict_gives_the_collated_logits_for_every_kind_of_model(kind, tokenizer):
    teacher = make_tiny_model(seed=5)
    model = teacher if kind == "teacher" else students.make_student(teacher, tokenizer, kind)
    ds = toy_sentences(45, seed=6)
    for batch_size in (1, 8, 64):
        np.testing.assert_allclose(infer.predict(model, ds, tokenizer, batch_size),
                                   collated_predict(model, ds, tokenizer, batch_size), atol=ATOL, rtol=0)


def test_predict_refuses_an_empty_dataset(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        infer.predict(make_tiny_model(), toy_sentences(4).select([]), tokenizer)


def test_bilstm_unpacked_paths_equal_the_packed_one(tokenizer):
    student = students.make_student(make_tiny_model(seed=7), tokenizer, "bilstm").eval()
    texts = ["the film was good", "a much longer sentence with many more words in it", "bad", "fine film"]
    mixed = tokenizer(texts, padding=True, return_tensors="pt")
    equal = tokenizer(["good film", "bad film"], padding=True, return_tensors="pt")
    assert equal["attention_mask"].all() and not mixed["attention_mask"].all()
    with torch.no_grad():
        for batch in (mixed, equal):
            ids, mask = batch["input_ids"], batch["attention_mask"]
            expected = student.head(packed_bilstm_pool(student, ids, mask))
            torch.testing.assert_close(student(ids, mask).logits, expected, atol=ATOL, rtol=0)
        torch.testing.assert_close(student(equal["input_ids"]).logits, student(**equal).logits, atol=0, rtol=0)
        forced = student.head(student._pool_padded(equal["input_ids"].t(), equal["attention_mask"].t()))
        torch.testing.assert_close(forced, student(**equal).logits, atol=ATOL, rtol=0)  # both unpacked paths agree


def test_bilstm_gradients_match_the_packed_path(tokenizer):
    student = students.make_student(make_tiny_model(seed=8), tokenizer, "bilstm").train()
    student.head[0].p = 0.0  # no dropout: the two passes must see the same network
    batch = tokenizer(["the film was good", "a much longer sentence with more words", "bad"], padding=True,
                      return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    grads = []
    for pool in (lambda: student._pool_padded(ids.t(), mask.t()), lambda: packed_bilstm_pool(student, ids, mask)):
        student.zero_grad()
        pool().sum().backward()
        grads.append([p.grad.clone() for p in student.lstm.parameters()] + [student.embed.weight.grad.clone()])
    for fused, packed in zip(*grads):
        torch.testing.assert_close(fused, packed, atol=1e-5, rtol=1e-4)


def test_cnn_without_padding_skips_the_mask_and_keeps_the_logits(tokenizer):
    student = students.make_student(make_tiny_model(seed=9), tokenizer, "cnn").eval()
    one = tokenizer(["the film was good"], return_tensors="pt")
    padded = tokenizer(["the film was good", "a much longer sentence with many more words in it"], padding=True,
                       return_tensors="pt")
    with torch.no_grad():
        alone, without_mask = student(**one).logits, student(one["input_ids"]).logits
        beside = student(**padded).logits[:1]
    torch.testing.assert_close(alone, without_mask, atol=0, rtol=0)
    torch.testing.assert_close(alone, beside, atol=ATOL, rtol=0)


def test_cnn_taps_product_equals_the_convolutions(tokenizer):
    student = students.make_student(make_tiny_model(seed=11), tokenizer, "cnn").eval()
    batch = tokenizer(["the film was good", "a much longer sentence with many more words in it", "bad"],
                      padding=True, return_tensors="pt")
    x = student.embed(batch["input_ids"]).detach() * batch["attention_mask"].unsqueeze(-1)
    lengths = batch["attention_mask"].sum(1, keepdim=True)
    with torch.no_grad():
        for given in (lengths, None):  # padded batch, and one treated as unpadded
            for taps, convolved in zip(student._pool_by_taps(x, given), student._pool_by_convolution(x, given)):
                torch.testing.assert_close(taps, convolved, atol=ATOL, rtol=0)


def test_cnn_taps_follow_the_weights_through_training(tokenizer, toy):
    student = students.make_student(make_tiny_model(seed=12), tokenizer, "cnn")
    texts = list(toy["test"]["text"][:16])
    test = toy["test"].select(range(16))
    before = infer.predict(student, test, tokenizer)  # builds the tap matrix, in inference mode
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    batch = tokenizer(list(toy["train"]["text"][:8]), padding=True, return_tensors="pt")
    student(**batch, labels=torch.tensor(toy["train"]["label"][:8])).loss.backward()  # no inference tensor in the graph
    optimizer.step()
    after = infer.predict(student, test, tokenizer)
    student.eval()
    convolved = student(**tokenizer(texts, padding=True, return_tensors="pt")).logits.detach()  # grad on: nn.Conv1d
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, convolved.numpy(), atol=ATOL, rtol=0)


def test_flops_of_the_fast_paths_are_counted_through_predict(tokenizer):
    """One sentence per call, no padding: FLOPs by hand for the CNN's tap product and the fused BiLSTM."""
    teacher, ds = make_tiny_model(seed=13), toy_sentences(6, seed=13)
    tokens = [len(ids) for ids in tokenizer(list(ds["text"]))["input_ids"]]
    cnn = students.make_student(teacher, tokenizer, "cnn")
    embed, channels, taps = cnn.embed.embedding_dim, cnn.convs[0].out_channels, sum(c.kernel_size[0] for c in cnn.convs)
    head = 2 * cnn.head[1].in_features * cnn.head[1].out_features
    expected = sum(2 * t * embed * taps * channels + head for t in tokens) / len(ds)
    assert flops.inference_flops(cnn, ds, tokenizer, batch_size=1) == pytest.approx(expected)
    lstm = students.make_student(teacher, tokenizer, "bilstm")
    gates, hidden = 4 * lstm.lstm.hidden_size, lstm.lstm.hidden_size
    head = sum(2 * layer.in_features * layer.out_features for layer in (lstm.head[1], lstm.head[3]))
    expected = sum(2 * 2 * t * gates * (embed + hidden) + head for t in tokens) / len(ds)
    assert flops.inference_flops(lstm, ds, tokenizer, batch_size=1) == pytest.approx(expected)


def test_latency_at_batch_one_reports_per_sentence_figures(tokenizer):
    model, ds = make_tiny_model(), toy_sentences(12)
    result = evaluate.latency(model, ds, tokenizer, batch_size=1, repeats=2)
    assert result["batch_size"] == 1 and result["n"] == 12
    assert result["ms_per_sentence"] == pytest.approx(1000 * result["seconds"] / 12)
    assert result["examples_per_second"] * result["ms_per_sentence"] == pytest.approx(1000)


def test_speedup_times_both_models_on_the_same_sentences(tokenizer):
    teacher = make_tiny_model(seed=10)
    student = students.make_student(teacher, tokenizer, "cnn")
    result = evaluate.speedup(student, teacher, toy_sentences(20), tokenizer, batch_size=8, repeats=2)
    assert result["model"]["n"] == result["baseline"]["n"] == 20
    expected = result["baseline"]["seconds"] / result["model"]["seconds"]
    assert result["speedup"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="tokenizer"):
        evaluate.speedup(student, teacher, toy_sentences(4))
