"""The one loop: it learns, logs, regularises, checkpoints and resumes exactly."""
from __future__ import annotations

import pytest
import torch

from xdlearn import data, models, objectives, runtime, train
from conftest import Interrupt, StopAfterFirstEpoch, make_tiny_model


def test_loss_goes_down_and_the_model_learns(tiny_model, tokenizer, toy):
    history = train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=6, lr=2e-3,
                        batch_size=16, eval_data=toy["test"], progress=False)
    losses = history.losses()
    assert len(losses) == 6 * 16
    assert sum(losses[-16:]) / 16 < 0.6 * sum(losses[:16]) / 16
    assert history.last["validation/accuracy"] > 0.9
    assert history.epochs[0]["examples_per_second"] > 0
    lrs = [row["lr"] for row in history.steps]
    assert max(lrs) == pytest.approx(2e-3) and lrs[-1] < lrs[len(lrs) // 2]  # warm-up, then decay


def test_resume_after_an_interruption_gives_identical_weights(tokenizer, toy, tmp_path):
    settings = dict(tokenizer=tokenizer, epochs=2, lr=1e-3, batch_size=32, progress=False)
    straight = make_tiny_model(seed=5)
    full = train.fit(straight, toy["train"], **settings)

    resumed = make_tiny_model(seed=5)
    with pytest.raises(Interrupt):
        train.fit(resumed, toy["train"], checkpoint_dir=tmp_path, monitor=StopAfterFirstEpoch(), **settings)
    fresh = make_tiny_model(seed=99)  # a new process would start from scratch weights
    history = train.fit(fresh, toy["train"], checkpoint_dir=tmp_path, resume=True, **settings)
    assert history.losses() == full.losses()
    for (name, a), (_, b) in zip(straight.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name


def test_resume_refuses_a_checkpoint_from_other_settings(tiny_model, tokenizer, toy, tmp_path):
    train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=1, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="different run"):
        train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=3, progress=False,
                  checkpoint_dir=tmp_path, resume=True)


def test_regularizers_add_to_the_loss(tiny_model, tokenizer, toy):
    calls = []
    def penalty(model):
        calls.append(1)
        return torch.tensor(5.0)
    plain = train.fit(make_tiny_model(), toy["train"], tokenizer=tokenizer, epochs=1, progress=False)
    regular = train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=1, progress=False,
                        regularizers=[penalty])
    assert len(calls) == len(regular.steps)
    assert regular.losses()[0] == pytest.approx(plain.losses()[0] + 5.0, rel=1e-5)


class ScaledCrossEntropy(objectives.Objective):
    """An objective with a parameter of its own: fit must train it too."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, model, batch):
        logits = model(**objectives.model_inputs(batch)).logits * self.scale
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"])
        return {"loss": loss, "logits": logits, "scale": self.scale.detach()}


def test_objective_parameters_are_optimised_and_extra_scalars_logged(tiny_model, tokenizer, toy):
    objective = ScaledCrossEntropy()
    history = train.fit(tiny_model, toy["train"], objective, tokenizer=tokenizer, epochs=1,
                        lr=1e-2, progress=False)
    assert objective.scale.item() != 1.0
    assert history.steps[-1]["scale"] == pytest.approx(objective.scale.item())


def test_history_round_trips_through_json(tiny_model, tokenizer, toy, tmp_path):
    history = train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=1, progress=False)
    history.save(tmp_path / "h.json")
    assert train.History.load(tmp_path / "h.json").to_dict() == history.to_dict()


def test_bad_training_data_is_rejected(tiny_model):
    with pytest.raises(TypeError, match="expected a datasets.Dataset"):
        train.fit(tiny_model, ["a list", "of strings"], progress=False)


def test_history_records_the_learning_rate_each_step_used(tiny_model, tokenizer, toy):
    history = train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=1, lr=1e-3, warmup=0.0,
                        batch_size=16, progress=False)
    lrs = [row["lr"] for row in history.steps]
    steps = len(lrs)
    assert lrs[0] == pytest.approx(1e-3)  # the first update uses the full rate, not the next one
    assert lrs[-1] == pytest.approx(1e-3 / steps)


def test_fine_tune_does_not_depend_on_earlier_random_draws(tmp_path, tokenizer, toy):
    make_tiny_model(seed=1).base_model.save_pretrained(tmp_path / "tiny")  # an encoder without a head
    tokenizer.save_pretrained(tmp_path / "tiny")
    torch.manual_seed(123)
    first, tok, history = train.fine_tune(toy["train"], tmp_path / "tiny", epochs=1, lr=1e-3, seed=4,
                                          batch_size=16, progress=False)
    torch.rand(11)  # whatever ran before in a notebook must not change the result
    second, _, _ = train.fine_tune(toy["train"], tmp_path / "tiny", epochs=1, lr=1e-3, seed=4,
                                   batch_size=16, progress=False)
    assert first.config.id2label == dict(enumerate(data.BINARY)) and len(history.steps) == 16
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
    untrained, _ = models.load_pretrained(tmp_path / "tiny", labels=data.BINARY, seed=4)
    assert not torch.equal(first.classifier.weight, untrained.classifier.weight)  # it trained


def test_load_pretrained_head_is_seeded_without_touching_the_global_rng(tmp_path, tokenizer):
    make_tiny_model(seed=1).base_model.save_pretrained(tmp_path / "tiny")  # an encoder without a head
    tokenizer.save_pretrained(tmp_path / "tiny")
    heads = []
    for seed in (7, 7, 8):
        torch.rand(5)
        before = torch.get_rng_state()
        model, _ = models.load_pretrained(tmp_path / "tiny", num_labels=2, seed=seed)
        assert torch.equal(torch.get_rng_state(), before)
        heads.append(model.classifier.weight.detach().clone())
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_fit_frees_its_optimiser_before_returning(tiny_model, tokenizer, toy):
    import gc
    train.fit(tiny_model, toy["train"], tokenizer=tokenizer, epochs=1, batch_size=32, progress=False)
    alive = [o for o in gc.get_objects() if issubclass(type(o), torch.optim.Optimizer)]
    assert alive == []  # AdamW keeps two tensors per parameter: they must not outlive training
    runtime.release_memory()  # safe to call at any time


def test_micro_batches_cut_a_long_batch_into_shares_of_its_sentences():
    batch = {"input_ids": torch.ones(8, 10, dtype=torch.long), "attention_mask": torch.ones(8, 10),
             "labels": torch.arange(8), "temperature": 2.0}
    assert train.micro_batches(batch, None) == [(batch, 1.0)]
    assert train.micro_batches(batch, 80) == [(batch, 1.0)]       # exactly at the limit: one pass
    parts = train.micro_batches(batch, 30)                         # 3 sentences of 10 positions per slice
    assert [len(p["input_ids"]) for p, _ in parts] == [3, 3, 2]
    assert [s for _, s in parts] == [3 / 8, 3 / 8, 2 / 8]
    assert torch.equal(torch.cat([p["labels"] for p, _ in parts]), batch["labels"])
    assert all(p["temperature"] == 2.0 for p, _ in parts)           # what is not per sentence is kept whole
    assert [len(p["input_ids"]) for p, _ in train.micro_batches(batch, 5)] == [1] * 8   # never below a sentence


def test_max_tokens_trains_exactly_as_the_whole_batch(tokenizer, toy):
    """Without dropout, slicing a batch changes the memory, not the update: same weights after training."""
    settings = dict(tokenizer=tokenizer, epochs=1, lr=1e-3, batch_size=16, progress=False)
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    whole, sliced = make_tiny_model(seed=3, **no_dropout), make_tiny_model(seed=3, **no_dropout)
    plain = train.fit(whole, toy["train"], **settings)
    width = max(len(ids) for ids in data.tokenize(toy["train"], tokenizer, 128)["input_ids"])
    history = train.fit(sliced, toy["train"], max_tokens=5 * width, **settings)   # every batch in 4 slices or more
    assert len(history.losses()) == len(plain.losses())
    assert history.losses() == pytest.approx(plain.losses(), abs=1e-5)
    for (name, a), (_, b) in zip(whole.state_dict().items(), sliced.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-5), name
    assert history.steps[0]["accuracy"] == pytest.approx(plain.steps[0]["accuracy"])


def test_max_tokens_must_be_positive(tiny_model, tokenizer, toy):
    with pytest.raises(ValueError, match="max_tokens"):
        train.fit(tiny_model, toy["train"], tokenizer=tokenizer, max_tokens=0, progress=False)


def test_tqdm_disable_turns_off_fits_bar_even_where_tqdm_ignores_it(tiny_model, toy, tokenizer, monkeypatch):
    """tqdm's notebook bar passes disable=False itself; fit reads TQDM_DISABLE so a book build draws no bars."""
    asked = []

    class Recorder:
        def __init__(self, iterable, **kwargs):
            self.iterable = iterable
            asked.append(kwargs["disable"])

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, **kwargs):
            pass

    monkeypatch.setattr(train, "tqdm", Recorder)
    settings = dict(tokenizer=tokenizer, epochs=1, lr=1e-3, batch_size=32, progress=True)
    train.fit(tiny_model, toy["train"], **settings)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    train.fit(tiny_model, toy["train"], **settings)
    assert asked == [False, True]
