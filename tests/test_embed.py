"""Domain statistics and sentence embeddings against hand-computed values (tiny model, toy data)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from xdlearn import data, embed
from conftest import make_tiny_model, toy_sentences


def labelled(texts, labels, domain="d"):
    return Dataset.from_dict({"text": texts, "label": labels, "domain": [domain] * len(texts)},
                             features=data.features(data.BINARY))


def test_words_lowercase_and_keep_inner_apostrophes():
    assert embed.words("I'm SO happy, it's 2 good!!") == ["i'm", "so", "happy", "it's", "2", "good"]


def test_length_stats_by_hand(tokenizer):
    domains = {"a": labelled(["one two", "one two three four"], [0, 1]), "b": labelled(["x"], [1])}
    frame = embed.length_stats(domains, tokenizer)
    assert frame.loc["a", "mean words"] == 3 and frame.loc["a", "median words"] == 3
    assert frame.loc["b", "sentences"] == 1
    assert frame.loc["a", "mean tokens"] >= frame.loc["a", "mean words"]  # WordPiece never merges words


def test_label_balance_and_majority_baseline():
    frame = embed.label_balance({"a": labelled(["s"] * 4, [1, 1, 1, 0]), "b": labelled(["s"] * 2, [0, 0])})
    assert frame.loc["a", "share positive"] == pytest.approx(0.75)
    assert frame.loc["a", "majority baseline"] == pytest.approx(0.75)
    assert frame.loc["b", "n negative"] == 2 and frame.loc["b", "share positive"] == 0


def test_domain_vocabulary_finds_the_words_that_mark_each_domain():
    films = labelled([f"the film was {w}" for w in ["good", "bad", "long", "fun"] * 5], [1, 0, 0, 1] * 5, "films")
    phones = labelled([f"the phone was {w}" for w in ["good", "bad", "slow", "fine"] * 5], [1, 0, 0, 1] * 5,
                      "phones")
    frame = embed.domain_vocabulary({"films": films, "phones": phones}, top=2, min_count=3)
    assert frame.loc[1, "films"] == "film" and frame.loc[1, "phones"] == "phone"
    assert "the" not in frame.to_numpy()  # shared words are not characteristic of either


def test_unseen_word_rate_and_matrix():
    assert embed.unseen_word_rate(["a b c"], ["a a d"]) == pytest.approx(1 / 3)
    sets = {"x": labelled(["a b"], [0]), "y": labelled(["c d"], [1])}
    frame = embed.unseen_word_matrix(sets, sets)
    assert frame.loc["x", "x"] == 0 and frame.loc["x", "y"] == 1 and frame.index.name == "words from"


def test_sentiment_flips_compare_each_domain_with_its_base_rate():
    # "return" is positive in films, negative in shops; "good" is positive in both (no flip)
    films = labelled(["return of the king"] * 20 + ["good film"] * 20 + ["dull film"] * 40,
                     [1] * 20 + [1] * 20 + [0] * 40, "films")
    shops = labelled(["had to return it"] * 20 + ["good shop"] * 20 + ["fine shop"] * 40,
                     [0] * 20 + [1] * 20 + [1] * 40, "shops")
    flips = embed.sentiment_flips({"films": films, "shops": shops}, min_count=10)
    assert flips.loc[0, "word"] == "return"
    assert flips.loc[0, "positive in"] == "films" and flips.loc[0, "negative in"] == "shops"
    assert "good" not in set(flips["word"])
    assert flips.loc[0, "strength"] > 3


def test_shuffle_labels_keeps_the_label_shares():
    ds = labelled([f"s{i}" for i in range(50)], [1] * 30 + [0] * 20)
    shuffled = embed.shuffle_labels({"d": ds}, seed=1)["d"]
    assert sum(shuffled["label"]) == 30 and shuffled["text"] == ds["text"]
    assert shuffled["label"] != ds["label"]
    assert shuffled.features["label"].names == list(data.BINARY)


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert embed.mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_sentence_embeddings_are_in_input_order_and_match_one_by_one(tokenizer):
    model = make_tiny_model().eval()
    texts = toy_sentences(37, seed=3)["text"]  # varied lengths: batches run sorted, order must come back
    batched = embed.sentence_embeddings(model, texts, tokenizer, batch_size=8)
    assert batched.shape == (37, model.config.hidden_size)
    for i in (0, 5, 36):
        alone = embed.sentence_embeddings(model, [texts[i]], tokenizer)
        np.testing.assert_allclose(batched[i], alone[0], atol=1e-5)
    # a Dataset works as well as a list, and normalised vectors have unit length
    from_ds = embed.sentence_embeddings(model.bert, toy_sentences(37, seed=3), tokenizer, batch_size=8,
                                        normalize=True)
    np.testing.assert_allclose(np.linalg.norm(from_ds, axis=1), 1.0, atol=1e-5)
    assert model.training is False


def test_sentence_embeddings_need_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        embed.sentence_embeddings(make_tiny_model(), ["a"], None)


def test_pca_2d_finds_the_main_direction():
    rng = np.random.default_rng(0)
    x = np.outer(rng.normal(size=200), [3.0, 0, 0, 0]) + rng.normal(scale=0.1, size=(200, 4))
    points, share = embed.pca_2d(x)
    assert points.shape == (200, 2) and share[0] > 0.95 and share[0] >= share[1]
    assert abs(np.corrcoef(points[:, 0], x[:, 0])[0, 1]) > 0.99


def test_nearest_centroid_separates_separated_groups():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(60, 5)) + [5, 0, 0, 0, 0], rng.normal(size=(60, 5)) + [0, 5, 0, 0, 0]])
    groups = ["a"] * 60 + ["b"] * 60
    result = embed.nearest_centroid(x, groups)
    assert result["accuracy"] > 0.95 and result["chance"] == pytest.approx(0.5)
    assert list(result["confusion"].index) == ["a", "b"]
    noise = embed.nearest_centroid(rng.normal(size=(400, 5)), ["a", "b"] * 200)
    assert noise["accuracy"] < 0.7


def test_plot_lengths_draws_one_histogram_per_domain():
    import matplotlib.pyplot as plt
    fig = embed.plot_lengths({"a": labelled(["a b c"] * 3, [0, 1, 0]), "b": labelled(["a"] * 2, [0, 1])})
    assert len(fig.axes[0].patches) == 2
    plt.close(fig)
