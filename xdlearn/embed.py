"""How far apart are two domains? Measured on the text itself and on a pretrained model's view of it.

Lesson 01 uses these to put numbers on domain shift before any fine-tuning: sentence lengths, label
balance (label shift), characteristic and unseen words (covariate shift), words whose sentiment flips
between domains (concept shift), and mean-pooled sentence embeddings projected to 2-D.
The measures take plain texts or ``{domain: Dataset}`` and return numbers or DataFrames.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from . import models
from .data import words
from .infer import map_batches
from .objectives import model_inputs



# ---------------------------------------------------------------------------------------------
# Text statistics: lengths, labels, words
# ---------------------------------------------------------------------------------------------
def length_stats(domains: Mapping[str, Dataset], tokenizer=None):
    """Sentence lengths per domain in words (and in model tokens if ``tokenizer``): what padding will cost."""
    import pandas as pd
    rows = {}
    for name, ds in domains.items():
        n_words = np.array([len(words(t)) for t in ds["text"]])
        row = {"sentences": len(ds), "mean words": n_words.mean(), "median words": float(np.median(n_words)),
               "90% below": float(np.percentile(n_words, 90))}
        if tokenizer is not None:  # WordPiece pieces, without [CLS]/[SEP]
            pieces = np.array([len(ids) for ids in tokenizer(list(ds["text"]), add_special_tokens=False)["input_ids"]])
            row["mean tokens"] = pieces.mean()
            row["tokens per word"] = pieces.sum() / max(1, n_words.sum())
        rows[name] = row
    frame = pd.DataFrame(rows).T
    frame["sentences"] = frame["sentences"].astype(int)
    frame.index.name = "domain"
    return frame


def label_balance(domains: Mapping[str, Dataset]):
    """Class counts and shares per domain: p(y), whose differences between domains are label shift."""
    import pandas as pd
    rows = {}
    for name, ds in domains.items():
        names = ds.features["label"].names
        counts = np.bincount(np.asarray(ds["label"], dtype=int), minlength=len(names))
        row = {f"n {c}": int(k) for c, k in zip(names, counts)}
        row.update({f"share {c}": k / max(1, counts.sum()) for c, k in zip(names, counts)})
        row["majority baseline"] = counts.max() / max(1, counts.sum())  # accuracy of always guessing it
        rows[name] = row
    frame = pd.DataFrame(rows).T
    frame.index.name = "domain"
    return frame


def word_counts(texts: Sequence[str], per_sentence: bool = False) -> Counter:
    """Word frequencies over ``texts`` (or, with ``per_sentence``, the number of sentences containing each)."""
    counts: Counter = Counter()
    for text in texts:
        tokens = words(text)
        counts.update(set(tokens) if per_sentence else tokens)
    return counts


def domain_vocabulary(domains: Mapping[str, Dataset], top: int = 10, prior: float = 1000.0,
                      min_count: int = 5):
    r"""Words most characteristic of each domain against all the others, ranked by a log-odds z-score.

    Raw frequencies only find "the" and "a"; the log-odds ratio with an informative Dirichlet prior
    (Monroe et al. 2008) compares a word's rate in the domain with its rate elsewhere and divides by
    its uncertainty, so rare words do not win by chance:
    :math:`z_w = \hat\delta_w / \sqrt{\mathrm{Var}\,\hat\delta_w}`. Returns a DataFrame, one column per
    domain, row ``k`` = the domain's ``k``-th most characteristic word.
    """
    import pandas as pd
    counts = {name: word_counts(ds["text"]) for name, ds in domains.items()}
    total = sum(counts.values(), Counter())
    n_total = sum(total.values())
    table = {}
    for name, own in counts.items():
        n_own = sum(own.values())
        n_rest = n_total - n_own
        scores = {}
        for word, k_all in total.items():
            k_own = own.get(word, 0)
            if k_own < min_count:
                continue
            k_rest = k_all - k_own
            a = prior * k_all / n_total  # the prior: the word's share of the whole corpus
            delta = (math.log((k_own + a) / (n_own + prior - k_own - a))
                     - math.log((k_rest + a) / (n_rest + prior - k_rest - a)))
            scores[word] = delta / math.sqrt(1 / (k_own + a) + 1 / (k_rest + a))
        ranked = sorted(scores, key=scores.get, reverse=True)[:top]
        table[name] = ranked + [""] * (top - len(ranked))
    frame = pd.DataFrame(table, index=range(1, top + 1))
    frame.index.name = "rank"
    return frame


def unseen_word_rate(source_texts: Sequence[str], target_texts: Sequence[str]) -> float:
    """Share of the target's word tokens that never occur in the source text: covariate shift in one number."""
    seen = set(word_counts(source_texts))
    target = word_counts(target_texts)
    n = sum(target.values())
    return sum(k for w, k in target.items() if w not in seen) / n if n else float("nan")


def unseen_word_matrix(sources: Mapping[str, Dataset], targets: Mapping[str, Dataset]):
    """``unseen_word_rate`` for every (source, target) pair, laid out like a transfer matrix."""
    import pandas as pd
    frame = pd.DataFrame({s: {t: unseen_word_rate(src["text"], tgt["text"]) for t, tgt in targets.items()}
                          for s, src in sources.items()}).T
    frame.index.name, frame.columns.name = "words from", "words of"
    return frame


def sentiment_flips(domains: Mapping[str, Dataset], min_count: int = 15, top: int | None = 10,
                    positive: int = 1):
    r"""Words that lean positive in one domain and negative in another, each against its domain's base rate.

    For a word ``w`` and domain ``d``, ``rate`` is the share of positive sentences among those
    containing ``w``: a crude piece of :math:`p_d(y \mid x)`. Comparing raw rates would mostly find
    label shift (tweets are positive whatever the word), so each rate is compared with the domain's
    own positive share: :math:`z_d = (\mathrm{rate} - \mathrm{base}_d) / \sqrt{\mathrm{base}_d(1-\mathrm{base}_d)/n_d}`.
    A flip has ``z > 0`` in one domain and ``z < 0`` in the other; ``strength`` is the smaller of
    the two sizes, so a large strength means both leanings are unlikely to be sampling noise.
    Returns the ``top`` flips (all with ``top=None``), strongest first, as a DataFrame.
    """
    import pandas as pd
    stats = {}
    for name, ds in domains.items():
        labels = np.asarray(ds["label"]) == positive
        n, k = Counter(), Counter()
        for text, y in zip(ds["text"], labels):
            for word in set(words(text)):
                n[word] += 1
                k[word] += int(y)
        stats[name] = (n, k, float(labels.mean()))

    def lean(name: str, word: str) -> tuple[float, float]:
        n, k, base = stats[name]
        rate = k[word] / n[word]
        return rate, (rate - base) / math.sqrt(max(base * (1 - base), 1e-12) / n[word])

    columns = ["word", "positive in", "positive rate", "positive z", "negative in", "negative rate",
               "negative z", "strength"]
    rows = []
    names = list(domains)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for word in stats[a][0].keys() & stats[b][0].keys():
                if min(stats[a][0][word], stats[b][0][word]) < min_count:
                    continue
                (r_a, z_a), (r_b, z_b) = lean(a, word), lean(b, word)
                if z_a * z_b >= 0:
                    continue  # same side of the base rate in both domains: no flip
                (pos, r_p, z_p), (neg, r_n, z_n) = sorted([(a, r_a, z_a), (b, r_b, z_b)], key=lambda t: -t[2])
                rows.append(dict(zip(columns, (word, pos, r_p, z_p, neg, r_n, z_n, min(z_p, -z_n)))))
    frame = pd.DataFrame(rows, columns=columns)
    frame = frame.sort_values("strength", ascending=False).reset_index(drop=True)
    return frame if top is None else frame.head(top)


def shuffle_labels(domains: Mapping[str, Dataset], seed: int = 0) -> dict[str, Dataset]:
    """Permute labels within each domain: keeps p(x) and p(y) but destroys p(y|x), a null model for flips."""
    rng = np.random.default_rng(seed)
    return {name: ds.remove_columns("label").add_column("label", rng.permutation(ds["label"]).tolist(),
                                                         feature=ds.features["label"])
            for name, ds in domains.items()}


# ---------------------------------------------------------------------------------------------
# A pretrained model's view: sentence embeddings, their 2-D picture, how separable domains are
# ---------------------------------------------------------------------------------------------
def load_encoder(name_or_path: str | os.PathLike | None = None):
    """The bare pretrained encoder (no classification head) and its tokenizer, offline by default."""
    from transformers import AutoModel
    source = models.resolve_model(name_or_path)
    with models.quiet_transformers():
        encoder = AutoModel.from_pretrained(source)
    return encoder.eval(), models.load_tokenizer(source)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors of each sentence, ignoring padding: how MiniLM was trained to embed."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


@torch.no_grad()
def sentence_embeddings(model_or_name: nn.Module | str | os.PathLike | None, texts: Sequence[str] | Dataset,
                        tokenizer=None, batch_size: int = 64, max_length: int = 128,
                        normalize: bool = False) -> np.ndarray:
    """One vector per sentence (mean-pooled last hidden states), in input order; batched, no gradients.

    ``model_or_name`` is an encoder, a ``*ForSequenceClassification`` model (its encoder is used, so a
    fine-tuned model's view can be compared with the pretrained one) or a name/path to load.
    """
    if model_or_name is None or isinstance(model_or_name, (str, os.PathLike)):
        encoder, loaded = load_encoder(model_or_name)
        tokenizer = tokenizer or loaded
    else:
        encoder = model_or_name.base_model  # the backbone; an encoder's base_model is itself
    if tokenizer is None:
        raise ValueError("sentence_embeddings() needs the model's tokenizer (or a model name to load both)")
    if not isinstance(texts, Dataset):
        texts = Dataset.from_dict({"text": list(texts)})
    if len(texts) == 0:
        return np.zeros((0, encoder.config.hidden_size), dtype=np.float32)

    def pooled(model, batch):
        vectors = mean_pool(model(**model_inputs(batch)).last_hidden_state, batch["attention_mask"])
        return torch.nn.functional.normalize(vectors, dim=-1) if normalize else vectors
    return map_batches(encoder, texts.select_columns(["text"]), pooled, tokenizer, batch_size, max_length)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows onto their 2 main directions of variance (SVD); also returns each one's share of variance.

    The share says how much of the picture is missing: two clouds that overlap in 2-D may still be
    apart in the other dimensions.
    """
    x = np.asarray(x, dtype=np.float64)
    centered = x - x.mean(0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    variance = s ** 2
    share = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
    return centered @ vt[:2].T, share


def nearest_centroid(x: np.ndarray, groups: Sequence[str], test_fraction: float = 0.3,
                     seed: int = 0) -> dict:
    """How well the domain can be told from the embedding: assign held-out rows to the nearest domain mean.

    Uses cosine similarity to centroids computed on the other rows. Chance is ``1/k`` for ``k``
    balanced domains; far above chance means :math:`p_S(x) \\neq p_T(x)` is visible to the model.
    Returns ``accuracy``, ``chance`` and ``confusion`` (DataFrame, rows = true domain, shares per row).
    """
    import pandas as pd
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)
    groups = np.asarray(groups)
    names = list(dict.fromkeys(groups.tolist()))
    order = np.random.default_rng(seed).permutation(len(groups))
    n_test = max(1, int(round(test_fraction * len(groups))))
    test, train = order[:n_test], order[n_test:]
    centroids = np.stack([x[train][groups[train] == g].mean(0) for g in names])
    predicted = np.asarray(names)[(x[test] @ centroids.T).argmax(1)]
    confusion = pd.crosstab(pd.Series(groups[test], name="true domain"),
                            pd.Series(predicted, name="nearest centroid"), normalize="index")
    confusion = confusion.reindex(index=names, columns=names, fill_value=0.0)
    _, counts = np.unique(groups, return_counts=True)
    return {"accuracy": float((predicted == groups[test]).mean()), "chance": counts.max() / counts.sum(),
            "confusion": confusion}


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------
def plot_lengths(domains: Mapping[str, Dataset], ax=None, max_words: int = 60,
                 title: str = "sentence length by domain"):
    """Overlaid length histograms (words per sentence), normalised so domains of any size compare."""
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.4))
    fig = ax.figure
    bins = np.arange(0, max_words + 2, 2)
    for name, ds in domains.items():
        n_words = np.clip([len(words(t)) for t in ds["text"]], 0, max_words)
        ax.hist(n_words, bins=bins, density=True, histtype="step", lw=1.8, label=name)
    ax.set_xlabel(f"words per sentence (longer clipped at {max_words})")
    ax.set_ylabel("share of sentences")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
