"""The one inference loop: a function of (model, batch) run over a dataset, in length-sorted batches, no gradients.

``predict`` (logits), ``embed.sentence_embeddings`` (mean-pooled states) and ``adapt.features`` ([CLS] states)
differ only in what they take from the model; the batching, eval mode and the restored row order live here.
``predict`` lives here, below ``train``, ``distill`` and ``evaluate``, so each of them can run a model without
importing another; lessons call it as ``evaluate.predict``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from .data import SortedBatches, tokenized
from .objectives import model_inputs


@torch.no_grad()
def map_batches(model: nn.Module, data: Dataset, fn: Callable[[nn.Module, dict], torch.Tensor], tokenizer=None,
                batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """``fn(model, batch)`` for every batch, stacked, one row per row of ``data`` in the dataset's order.

    Batches run sorted by length (least padding) in eval mode; the model's train/eval mode is restored after.
    A batch holds the model's inputs (``input_ids``, ``attention_mask``, ``token_type_ids``), no labels.
    """
    if len(data) == 0:
        raise ValueError("the dataset is empty: there is no sentence to run the model on")
    batches = SortedBatches(tokenized(data, tokenizer, max_length), batch_size,
                            getattr(tokenizer, "pad_token_id", None) or 0)
    was_training = model.training
    model.eval()
    try:
        outputs = [fn(model, batch).float() for batch in batches]
    finally:
        model.train(was_training)
    stacked = torch.cat(outputs).numpy()
    restored = np.empty_like(stacked)
    restored[batches.order] = stacked
    return restored


def predict(model: nn.Module, data: Dataset, tokenizer=None, batch_size: int = 64,
            max_length: int = 128) -> np.ndarray:
    """Logits for every row of ``data``, in the dataset's order (batches run sorted by length)."""
    return map_batches(model, data, lambda m, batch: m(**model_inputs(batch)).logits, tokenizer,
                       batch_size, max_length)
