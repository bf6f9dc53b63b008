"""What a batch is trained on. The loop in ``train.fit`` is the same for all of them.

An objective is an ``nn.Module`` whose ``forward(model, batch)`` returns a dict with a scalar ``loss``
(what ``backward()`` sees), optionally the ``logits`` it computed, and any other scalars worth logging.
Being a module lets an objective own parameters (a projection, a domain discriminator) that the
optimiser then trains alongside the model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_inputs(batch: dict) -> dict:
    """The tensors a Hugging Face encoder takes, leaving labels and extras out."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


class Objective(nn.Module):
    """Base class: map (model, batch) to a dict with at least ``loss``."""

    def forward(self, model: nn.Module, batch: dict) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    def set_progress(self, fraction: float) -> None:
        """Told by ``fit`` before every step how far training has got (0 to 1); a schedule (DANN's lambda) reads it."""

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The objective's own trainable parameters (a projection, a discriminator) as optimiser groups for ``fit``."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay}] if params else []


class CrossEntropy(Objective):
    r"""Supervised fine-tuning: :math:`\mathcal{L} = -\frac1N\sum_i \log p_\theta(y_i \mid x_i)`."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, model: nn.Module, batch: dict) -> dict:
        logits = model(**model_inputs(batch)).logits
        loss = F.cross_entropy(logits, batch["labels"], label_smoothing=self.label_smoothing)
        return {"loss": loss, "logits": logits}


def accuracy_of(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of a batch predicted right: a cheap running signal for progress bars."""
    return (logits.argmax(-1) == labels).float().mean().item()
