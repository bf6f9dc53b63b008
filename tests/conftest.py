"""Shared fixtures: a tiny BERT that trains in seconds, toy data with a learnable signal."""
from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset

from xdlearn import data, models

POSITIVE = ["good", "great", "lovely", "excellent", "wonderful"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "poor"]
FILLER = ["the", "film", "was", "really", "quite", "a", "phone", "story", "and", "it", "very"]


def toy_sentences(n: int, seed: int = 0, domain: str = "toy") -> Dataset:
    """Sentences of varied length whose label is given by one sentiment word."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = rng.choices(FILLER, k=rng.randint(2, 14))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
        texts.append(" ".join(words))
        labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels, "domain": [domain] * n},
                             features=data.features(data.BINARY))


@pytest.fixture(scope="session")
def tokenizer():
    return models.load_tokenizer()


def make_tiny_model(num_labels: int = 2, seed: int = 0, **config):
    """A 2-layer, 32-wide BERT with the MiniLM vocabulary: real code paths, seconds to train."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels,
                        id2label=dict(enumerate(data.BINARY)), label2id={"negative": 0, "positive": 1}, **config)
    return BertForSequenceClassification(config)


@pytest.fixture
def tiny_model():
    return make_tiny_model()


@pytest.fixture(scope="session")
def toy():
    return {"train": toy_sentences(256, seed=1), "test": toy_sentences(128, seed=2)}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    """A saved tiny BERT with the MiniLM tokenizer: a model directory the main job fine-tunes in seconds."""
    path = tmp_path_factory.mktemp("tiny") / "model"
    make_tiny_model().save_pretrained(path)
    models.load_tokenizer().save_pretrained(path)
    return str(path)


class Interrupt(Exception):
    """Raised by ``StopAfterFirstEpoch``: a run killed after its first epoch's checkpoint."""


class StopAfterFirstEpoch:
    """A ``fit`` monitor that interrupts the run once its first epoch (and checkpoint) is done."""

    def on_step(self, history):
        pass

    def on_epoch(self, history):
        raise Interrupt
