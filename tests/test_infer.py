"""The inference loop's batches: the same numbers as the row-by-row collator they replace, for sentences of one
length and of many, for every kind of model."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_tiny_model, toy_sentences
from xdlearn import data, infer, students
from xdlearn.objectives import model_inputs

ATOL = 1e-6   # logits equal to float rounding


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
