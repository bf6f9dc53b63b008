"""Adaptation with unlabeled target text: masking, tied decoder, gradient reversal, DANN, EM priors."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from conftest import FILLER, NEGATIVE, POSITIVE, Interrupt, StopAfterFirstEpoch, make_tiny_model, toy_sentences
from xdlearn import adapt, data, models, train
from xdlearn.objectives import Objective


def test_masking_follows_bert_proportions_and_spares_special_tokens_and_padding(tokenizer):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (400, 50), generator=g)
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    mask = torch.ones_like(ids)
    mask[:200, 40:] = 0      # padding marked by the attention mask alone (ordinary ids there), so the mask must count
    masked, labels = adapt.mask_tokens(ids, mask, tokenizer, generator=torch.Generator().manual_seed(1))
    chosen = labels != adapt.IGNORE
    eligible = (mask == 1) & (ids != tokenizer.cls_token_id) & (ids != tokenizer.sep_token_id)
    assert not (chosen & ~eligible).any()                       # never padding, [CLS] or [SEP]
    assert chosen.sum() / eligible.sum() == pytest.approx(0.15, abs=0.01)
    assert torch.equal(labels[chosen], ids[chosen])             # labels are the original tokens
    share_mask = (masked[chosen] == tokenizer.mask_token_id).float().mean()
    share_same = (masked[chosen] == ids[chosen]).float().mean()
    assert share_mask == pytest.approx(0.8, abs=0.02)
    assert share_same == pytest.approx(0.1, abs=0.02)           # (a random token can hit the same id: rare)
    assert torch.equal(masked[~chosen], ids[~chosen])           # nothing else changes


def test_masked_lm_loss_counts_only_masked_positions(tokenizer, toy):
    model = make_tiny_model().eval()  # no dropout: the two passes below must see the same network
    objective = adapt.MaskedLM(model, tokenizer, seed=5)
    batch = next(iter(data.make_loader(toy["train"].select(range(16)), tokenizer, batch_size=16, shuffle=False)))
    out = objective(model, batch)
    masked, labels = adapt.mask_tokens(batch["input_ids"], batch["attention_mask"], tokenizer,
                                       generator=torch.Generator().manual_seed(5))  # the same masks again
    states = model(input_ids=masked, attention_mask=batch["attention_mask"],
                   token_type_ids=batch["token_type_ids"], output_hidden_states=True).hidden_states[-1]
    logits = torch.nn.functional.linear(objective.transform(states), model.get_input_embeddings().weight,
                                        objective.bias)
    by_hand = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=adapt.IGNORE)
    everywhere = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["input_ids"].flatten())
    assert out["loss"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert abs(everywhere.item() - by_hand.item()) > 1e-3
    assert out["masked_tokens"].item() == (labels != adapt.IGNORE).sum().item()


def test_decoder_is_tied_to_the_word_embeddings_and_trains_them(tokenizer, toy):
    model = make_tiny_model()
    objective = adapt.MaskedLM(model, tokenizer, seed=0)
    embeddings = model.get_input_embeddings().weight
    assert objective.decoder_weight(model) is embeddings          # the same tensor, not a copy
    assert all(p is not embeddings for p in objective.parameters())  # so the optimiser sees it once
    before = embeddings.detach().clone()
    history = train.fit(model, data.unlabeled(toy["train"]), objective, tokenizer=tokenizer, epochs=3,
                        lr=3e-3, batch_size=32, progress=False)
    assert not torch.equal(before, model.get_input_embeddings().weight)
    losses = history.losses()
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.5       # it learns to fill in the blanks


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = adapt.grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    upstream = torch.randn(4, 3)
    y.backward(upstream)
    assert torch.allclose(x.grad, -0.3 * upstream)


def test_lambda_schedule_rises_from_zero_toward_one():
    values = [adapt.dann_lambda(p) for p in np.linspace(0, 1, 11)]
    assert values[0] == 0.0 and values[-1] > 0.999 and all(np.diff(values) > 0)


def test_fit_tells_the_objective_how_far_training_has_got(tokenizer, toy):
    class Recorder(Objective):
        def __init__(self):
            super().__init__()
            self.seen = []

        def set_progress(self, fraction):
            self.seen.append(fraction)

        def forward(self, model, batch):
            logits = model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits
            return {"loss": torch.nn.functional.cross_entropy(logits, batch["labels"])}
    recorder = Recorder()
    train.fit(make_tiny_model(), toy["train"].select(range(64)), recorder, tokenizer=tokenizer, epochs=2,
              batch_size=16, progress=False)
    assert recorder.seen == [step / 8 for step in range(8)]


def _two_domains(n: int, seed: int) -> tuple[Dataset, Dataset]:
    """Same sentiment words, different filler: the domain is visible in every sentence, the label too."""
    rng = random.Random(seed)
    other = ["phone", "battery", "screen", "charger", "case", "signal", "app", "button"]
    def sentences(filler, domain):
        rows = {"text": [], "label": [], "domain": []}
        for i in range(n):
            words = rng.choices(filler, k=rng.randint(3, 8))
            words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if i % 2 else NEGATIVE))
            rows["text"].append(" ".join(words)); rows["label"].append(i % 2); rows["domain"].append(domain)
        return Dataset.from_dict(rows, features=data.features(data.BINARY))
    return sentences(FILLER, "films"), sentences(other, "phones")


class BagOfWords(nn.Module):
    """Mean of word embeddings -> tanh layer -> head: a model whose features carry the domain plainly."""

    def __init__(self, dim: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = nn.EmbeddingBag(30522, dim, mode="mean")
        self.encode = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.head = nn.Linear(dim, 2)

    def forward(self, input_ids, attention_mask, output_hidden_states=False, **_):
        features = self.encode(self.embed(input_ids * attention_mask))
        return SequenceClassifierOutput(logits=self.head(features), hidden_states=(features.unsqueeze(1),))


def test_dann_drives_the_domain_discriminator_toward_chance_while_the_task_holds(tokenizer):
    from xdlearn import evaluate
    source, target = _two_domains(256, seed=0)
    test_target = _two_domains(200, seed=1)[1]
    runs = {}
    for name, weight in (("no reversal", 0.0), ("dann", 1.0)):  # weight 0: the discriminator learns, the encoder ignores it
        model = BagOfWords()
        objective = adapt.DomainAdversarial(target, tokenizer, hidden_size=16, weight=weight, seed=0,
                                            discriminator_lr_scale=1.0)  # a toy this small needs no faster adversary
        history = train.fit(model, source, objective, tokenizer=tokenizer, epochs=8, lr=1e-2, batch_size=32,
                            progress=False)
        runs[name] = {"discriminator": np.mean([r["domain_accuracy"] for r in history.steps[-5:]]),
                      "task": evaluate.evaluate(model, test_target, tokenizer)["accuracy"]}
    assert runs["no reversal"]["discriminator"] > 0.85      # the domains are easy to tell apart...
    assert runs["dann"]["discriminator"] < 0.65             # ...until the encoder is pushed to hide them
    assert runs["dann"]["task"] > runs["no reversal"]["task"] - 0.1
    assert runs["dann"]["task"] > 0.65                       # well above chance on the target


def test_em_recovers_known_priors_from_calibrated_probabilities():
    rng = np.random.default_rng(0)
    for target_positive in (0.2, 0.5, 0.8):
        y = rng.random(20000) < target_positive
        x = rng.normal(np.where(y, 1.0, -1.0), 1.0)
        p_positive = 1 / (1 + np.exp(-2 * x))                   # exact posterior under equal source priors
        probs = np.stack([1 - p_positive, p_positive], axis=1)
        priors = adapt.estimate_priors(probs, [0.5, 0.5])
        assert priors[1] == pytest.approx(target_positive, abs=0.02)
        adjusted = adapt.adjust_to_priors(probs, [0.5, 0.5], priors)
        assert np.allclose(adjusted.sum(1), 1.0)
        if target_positive != 0.5:  # with skewed priors, the corrected decision rule is right more often
            assert (adjusted.argmax(1) == y).mean() > (probs.argmax(1) == y).mean() + 0.01
    with pytest.raises(ValueError, match="sum to 1"):
        adapt.estimate_priors(probs, [0.7, 0.7])


def test_an_adapted_encoder_reloads_into_a_classifier_with_a_fresh_seeded_head(tmp_path, tokenizer, toy):
    model = make_tiny_model()
    train.fit(model, data.unlabeled(toy["train"].select(range(64))), adapt.MaskedLM(model, tokenizer, seed=0),
              tokenizer=tokenizer, epochs=1, lr=3e-3, progress=False)
    adapt.save_encoder(model, tokenizer, tmp_path / "encoder")
    first, _ = models.load_pretrained(tmp_path / "encoder", labels=data.BINARY, seed=7)
    second, _ = models.load_pretrained(tmp_path / "encoder", labels=data.BINARY, seed=7)
    adapted, reloaded = model.base_model.state_dict(), first.base_model.state_dict()
    assert adapted.keys() == reloaded.keys()
    for name in adapted:
        assert torch.equal(adapted[name], reloaded[name]), name
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    assert not torch.equal(first.classifier.weight, model.classifier.weight)


def test_augmented_labels_follow_their_sentences(toy):
    labelled = toy["train"].select(range(20))
    grown = adapt.augment_labelled(labelled, copies=2, seed=0)
    assert len(labelled) < len(grown) <= 3 * len(labelled)
    assert grown.features["label"] == labelled.features["label"]
    for text, label in zip(grown["text"][len(labelled):], grown["label"][len(labelled):]):
        sentiment = [w for w in text.split() if w in POSITIVE + NEGATIVE]
        if sentiment:  # the sentiment word survived the perturbation: the label must match it
            assert label == int(sentiment[0] in POSITIVE)
    assert list(grown["text"][:len(labelled)]) == list(labelled["text"])
    bare = labelled.remove_columns("domain")                # a user's table without a domain column works too
    assert adapt.augment_labelled(bare, copies=1, seed=0).column_names == ["text", "label"]


def test_a_batch_with_nothing_masked_costs_zero_not_nan(tokenizer):
    model = make_tiny_model().eval()
    objective = adapt.MaskedLM(model, tokenizer, probability=0.01, seed=0)
    short = Dataset.from_dict({"text": ["ok", "no", "yes", "fine"]})
    batch = next(iter(data.make_loader(short, tokenizer, batch_size=4, shuffle=False)))
    out = objective(model, batch)              # 4 one-word sentences at 1%: almost surely nothing is masked
    assert out["masked_tokens"].item() == 0 and out["loss"].item() == 0.0
    out["loss"].backward()                     # and a backward pass still works (all-zero gradients)
    with pytest.raises(ValueError, match="no token of the 4 sentences was masked"):
        adapt.masked_lm_scores(model, objective, short, tokenizer)


def test_masked_lm_scores_are_repeatable_and_leave_the_objective_as_it_was(tokenizer, toy):
    model = make_tiny_model()
    objective = adapt.MaskedLM(model, tokenizer, seed=3)
    state = objective.generator.get_state()
    first = adapt.masked_lm_scores(model, objective, toy["test"], tokenizer)
    second = adapt.masked_lm_scores(model, objective, toy["test"], tokenizer)
    assert first == second and first["masked_tokens"] > 50
    assert first["perplexity"] > 1000             # an untrained head over 30k words guesses blindly
    assert torch.equal(objective.generator.get_state(), state) and model.training


def test_proxy_a_distance_reads_separable_and_identical_domains():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (200, 8))
    assert adapt.proxy_a_distance(a, rng.normal(3, 1, (200, 8)))["proxy_a_distance"] > 1.9
    assert adapt.proxy_a_distance(a, rng.normal(0, 1, (200, 8)))["proxy_a_distance"] < 0.4
    with pytest.raises(ValueError, match="at least 5 sentences per domain"):
        adapt.proxy_a_distance(a[:4], a[:4])   # 5 folds need 5 sentences of each domain


def test_features_come_back_in_dataset_order(tokenizer, toy):
    model = make_tiny_model()
    ds = toy["test"].select(range(40))
    together = adapt.features(model, ds, tokenizer)
    one = adapt.features(model, ds.select([7]), tokenizer)
    assert together.shape == (40, 32) and np.allclose(together[7], one[0], atol=1e-5)


def test_prior_estimation_refuses_logits_and_mismatched_shapes():
    assert np.allclose(adapt.label_priors([0, 1, 1, 1], 2), [0.25, 0.75])
    with pytest.raises(ValueError, match="evaluate.softmax"):
        adapt.estimate_priors(np.array([[2.0, -1.0], [0.5, 0.3]]), [0.5, 0.5])
    with pytest.raises(ValueError, match="3 classes"):
        adapt.estimate_priors(np.array([[0.5, 0.5]]), [0.2, 0.3, 0.5])


def test_dann_names_a_wrong_feature_width(tokenizer, toy):
    objective = adapt.DomainAdversarial(toy["test"], tokenizer, hidden_size=384)
    batch = next(iter(data.make_loader(toy["train"].select(range(8)), tokenizer, batch_size=8)))
    with pytest.raises(ValueError, match="32 wide but hidden_size=384"):
        objective(make_tiny_model(), batch)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        adapt.DomainAdversarial(toy["test"], tokenizer, hidden_size=32, weight=-1.0)


def _objective(kind: str, model, tokenizer, target: Dataset) -> Objective:
    """A DANN objective over 40 target sentences (3 batches of 16: epoch 1 ends 4 batches in, mid-pass), or masked LM."""
    if kind == "dann":
        return adapt.DomainAdversarial(target, tokenizer, hidden_size=32, batch_size=16, seed=0)
    return adapt.MaskedLM(model, tokenizer, seed=0)


def _train_three_epochs(kind: str, tokenizer, checkpoint_dir=None, monitor=None):
    """Three epochs of ``kind`` on toy sentences; the trained model, or None when ``monitor`` interrupted it."""
    model = make_tiny_model()
    source, target = toy_sentences(64, seed=1), toy_sentences(40, seed=5)
    objective = _objective(kind, model, tokenizer, target)
    try:
        train.fit(model, source if kind == "dann" else target, objective, tokenizer=tokenizer, epochs=3,
                  batch_size=16, lr=1e-3, progress=False, checkpoint_dir=checkpoint_dir, resume=True,
                  monitor=monitor)
    except Interrupt:
        return None
    return model


@pytest.mark.parametrize("kind", ["dann", "masked-lm"])
def test_a_resumed_adaptation_draws_what_an_uninterrupted_one_would(tokenizer, tmp_path, kind):
    """The objective's own randomness (DANN's target stream, the masks) is checkpointed, so resuming is exact."""
    whole = _train_three_epochs(kind, tokenizer)
    assert _train_three_epochs(kind, tokenizer, tmp_path, StopAfterFirstEpoch()) is None
    resumed = _train_three_epochs(kind, tokenizer, tmp_path)
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
