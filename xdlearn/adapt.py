r"""Adapting a model with *unlabeled* target text: objectives of the one loop, and a prior correction.

* **Continued masked-LM pretraining** (domain- or task-adaptive, Gururangan et al. 2020): ``MaskedLM`` hides 15%
  of the tokens (80% ``[MASK]``, 10% a random token, 10% unchanged) and scores only those positions:

  .. math:: \mathcal{L}_\text{MLM} = -\frac{1}{|M|}\sum_{i \in M} \log p_\theta(x_i \mid \tilde x)

* **Domain-adversarial training** (DANN, Ganin et al. 2016): ``DomainAdversarial`` trains a discriminator to tell
  source from target sentences while a gradient-reversal layer pushes the encoder to make them alike:

  .. math:: \min_{\theta, h}\max_{d}\; \mathcal{L}_\text{task}(h\circ f_\theta) - \lambda\,\mathcal{L}_\text{dom}(d\circ f_\theta)

  motivated by Ben-David et al. (2010): target error <= source error + (a divergence between the domains' features)
  + the error of the best joint classifier; DANN shrinks the middle term.
* **Label-shift correction** (Saerens et al. 2002): ``estimate_priors`` re-estimates the target's class priors by EM
  on the model's probabilities, ``adjust_to_priors`` re-weights the predictions; no target label is needed.
* **Augmentation for scarce labels**: ``augment_labelled`` perturbs labelled sentences with the same code that builds
  distillation transfer sets (``distill.augment``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, concatenate_datasets
from torch import nn

from .data import make_loader, quiet_datasets
from .distill import augment
from .infer import map_batches
from .objectives import Objective, model_inputs

MLM_PROBABILITY = 0.15
IGNORE = -100  # label of positions that carry no loss (cross_entropy's ignore_index)


# ---------------------------------------------------------------------------------------------
# Continued masked-language-model pretraining
# ---------------------------------------------------------------------------------------------
def masking_collator(tokenizer, probability: float = MLM_PROBABILITY):
    """transformers' own BERT masking (80% [MASK] / 10% random / 10% kept); fails now if the tokenizer has no [MASK]."""
    from transformers import DataCollatorForLanguageModeling
    if tokenizer.mask_token is None:
        raise ValueError(f"{type(tokenizer).__name__} has no mask token: masked-LM training needs one")
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability)


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer, probability: float = MLM_PROBABILITY,
                generator: torch.Generator | None = None, collator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of a batch; padding and special tokens are never chosen.

    Returns ``(masked_ids, labels)``: labels hold the original id at chosen positions and ``-100`` elsewhere.
    """
    collator = collator or masking_collator(tokenizer, probability)
    collator.generator = generator
    special = torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids)) | (attention_mask == 0)
    return collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask=special)


class MaskedLM(Objective):
    """Masked-LM loss on a classifier's encoder: a new transform layer, and a decoder tied to the word embeddings.

    MiniLM ships without an MLM head, so one is built: dense -> GELU -> LayerNorm (trained here), then the model's own
    input-embedding matrix as the output projection (tied, as in BERT: not a copy, the same tensor) plus a bias.
    Train with ``fit(classifier, unlabeled_text, MaskedLM(classifier, tokenizer))``: the classifier's encoder adapts,
    its head is untouched; ``save_encoder`` then hands the encoder to a new classifier. Logs ``masked_accuracy``.
    Under ``torchrun`` DDP would stop at the unused classifier head: run masked-LM training in one process.
    """

    def __init__(self, model: nn.Module, tokenizer, probability: float = MLM_PROBABILITY, seed: int | None = None):
        super().__init__()
        self.collator = masking_collator(tokenizer, probability)
        hidden = model.config.hidden_size
        eps = getattr(model.config, "layer_norm_eps", 1e-12)
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=eps))
        self.bias = nn.Parameter(torch.zeros(model.get_input_embeddings().weight.shape[0]))
        self.tokenizer, self.probability = tokenizer, probability
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def get_extra_state(self) -> dict:
        """The mask generator's state (saved in checkpoints): a resumed run draws the masks an uninterrupted one would."""
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def set_extra_state(self, state: dict) -> None:
        """Continue the masks where a checkpoint left them."""
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])

    def decoder_weight(self, model: nn.Module) -> torch.Tensor:
        """The output projection: the model's word embeddings themselves (weight tying)."""
        return getattr(model, "module", model).get_input_embeddings().weight

    def forward(self, model: nn.Module, batch: dict) -> dict:
        masked, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], self.tokenizer,
                                     self.probability, self.generator, self.collator)
        inputs = {**model_inputs(batch), "input_ids": masked}
        states = model(**inputs, output_hidden_states=True).hidden_states[-1]
        chosen = labels != IGNORE                      # score only the masked positions: cheaper, and the loss
        if not chosen.any():                           # a batch of very short sentences can draw no mask at all
            zero = states.sum() * 0.0
            return {"loss": zero, "masked_accuracy": zero.detach(), "masked_tokens": zero.detach()}
        logits = F.linear(self.transform(states[chosen]), self.decoder_weight(model), self.bias)
        loss = F.cross_entropy(logits, labels[chosen])
        accuracy = (logits.argmax(-1) == labels[chosen]).float().mean()
        return {"loss": loss, "masked_accuracy": accuracy.detach(), "masked_tokens": chosen.sum().float()}


@torch.no_grad()
def masked_lm_scores(model: nn.Module, objective: MaskedLM, data: Dataset, tokenizer, batch_size: int = 64,
                     max_length: int = 128, seed: int = 0) -> dict:
    """Masked-token accuracy and perplexity on held-out text, with masks drawn from ``seed`` (same masks every call)."""
    loader = make_loader(data, tokenizer, batch_size=batch_size, shuffle=False, max_length=max_length)
    was_training, saved = model.training, objective.generator
    model.eval()
    objective.generator = torch.Generator().manual_seed(seed)
    correct = nll = count = 0.0
    try:
        for batch in loader:
            out = objective(model, batch)
            n = out["masked_tokens"].item()
            correct, nll, count = correct + out["masked_accuracy"].item() * n, nll + out["loss"].item() * n, count + n
    finally:
        objective.generator = saved
        model.train(was_training)
    if count == 0:
        raise ValueError(f"no token of the {len(data)} sentences was masked: too few or too short to score")
    return {"masked_accuracy": correct / count, "perplexity": math.exp(nll / count), "masked_tokens": int(count)}


def save_encoder(model: nn.Module, tokenizer, path: str | os.PathLike) -> Path:
    """Save the classifier's encoder (not its head), so ``load_pretrained(path)`` adds a new, seeded head."""
    path = Path(path)
    model.base_model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------
# Domain-adversarial training
# ---------------------------------------------------------------------------------------------
class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    r"""Identity going forward, :math:`-\lambda\cdot` gradient going back: one network plays both sides of a min-max."""
    return _GradientReversal.apply(x, scale)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    r"""Ganin et al.'s schedule :math:`\lambda_p = 2/(1+e^{-\gamma p}) - 1`: 0 at the start (features first), to 1."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def sentence_features(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits and the last layer's first-token ([CLS]) state: the input of BERT's pooler and head."""
    out = model(**model_inputs(batch), output_hidden_states=True)
    return out.logits, out.hidden_states[-1][:, 0]


class DomainAdversarial(Objective):
    """DANN as an objective: the task loss on a labelled source batch plus a domain loss through gradient reversal.

    Two data streams, one loop: ``fit`` iterates the labelled *source* data as usual, and this objective draws the
    matching unlabeled *target* batch itself, from its own length-grouped loader that restarts when exhausted. The
    loop stays unaware of the second stream; it only tells every objective how far training has got
    (``set_progress``), which sets the lambda schedule. The discriminator is a parameter of the objective, so ``fit``
    trains it with the model, at ``discriminator_lr_scale`` times the model's rate. Measured on MiniLM (movies ->
    tweets, 16 + 16 sentences a step): with the discriminator at the encoder's rate, the encoder learned to make it
    confidently *wrong* (domain accuracy 0.17 at ``weight`` 0.1, 0.04 at 0.3, chance 0.5), hence the defaults: the
    largest lambda (``weight``) 0.1 and a 10x faster discriminator. Under ``torchrun`` each process draws the whole
    target stream (not sharded). The stream's position (pass and batches drawn) is part of ``state_dict``, so a run
    resumed from a checkpoint draws the very target batches an uninterrupted one would.
    """

    def __init__(self, target_data: Dataset, tokenizer, hidden_size: int, batch_size: int = 32, weight: float = 0.1,
                 gamma: float = 10.0, max_length: int = 128, seed: int = 0, discriminator_lr_scale: float = 10.0):
        super().__init__()
        if len(target_data) == 0:
            raise ValueError("DomainAdversarial needs unlabeled target sentences; target_data is empty")
        if weight < 0 or discriminator_lr_scale <= 0:
            raise ValueError(f"weight must be >= 0 and discriminator_lr_scale > 0, got {weight} and "
                             f"{discriminator_lr_scale}")
        self.discriminator = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Dropout(0.1),
                                           nn.Linear(hidden_size, 2))
        self.loader = make_loader(text_only(target_data), tokenizer, batch_size=batch_size, seed=seed,
                                  max_length=max_length)
        self.weight, self.gamma, self.progress = weight, gamma, 0.0
        self.discriminator_lr_scale = discriminator_lr_scale
        self._epoch, self._drawn, self._batches = 0, 0, iter(())

    def set_progress(self, fraction: float) -> None:
        self.progress = fraction

    def optimizer_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The discriminator learns ``discriminator_lr_scale`` times faster than the encoder it plays against."""
        return super().optimizer_groups(lr * self.discriminator_lr_scale, weight_decay)

    def target_batch(self) -> dict:
        """The next unlabeled target batch; a new shuffled pass over the target text when one runs out."""
        batch = next(self._batches, None)
        if batch is None:
            self._start_pass(self._epoch)
            batch = next(self._batches)
        self._drawn += 1
        return batch

    def _start_pass(self, epoch: int, skip: int = 0) -> None:
        """Begin pass ``epoch`` over the target text (its own seeded order), ``skip`` batches into it."""
        self.loader.batch_sampler.set_epoch(epoch)
        self._epoch, self._drawn = epoch + 1, skip
        self._batches = iter(self.loader)
        for _ in range(skip):
            next(self._batches)

    def get_extra_state(self) -> dict:
        """Where the target stream stands (saved in checkpoints with the discriminator's weights)."""
        return {"passes_started": self._epoch, "batches_drawn": self._drawn}

    def set_extra_state(self, state: dict) -> None:
        """Continue the target stream where a checkpoint left it: same pass, next batch."""
        started, drawn = int(state["passes_started"]), int(state["batches_drawn"])
        if started == 0:
            self._epoch, self._drawn, self._batches = 0, 0, iter(())
        else:
            self._start_pass(started - 1, skip=drawn)

    def forward(self, model: nn.Module, batch: dict) -> dict:
        logits, source = sentence_features(model, batch)
        if source.shape[-1] != self.discriminator[0].in_features:
            raise ValueError(f"the model's features are {source.shape[-1]} wide but hidden_size="
                             f"{self.discriminator[0].in_features}: pass model.config.hidden_size")
        _, target = sentence_features(model, self.target_batch())
        task = F.cross_entropy(logits, batch["labels"])
        lam = self.weight * dann_lambda(self.progress, self.gamma)
        domain_logits = self.discriminator(grad_reverse(torch.cat([source, target]), lam))
        domain = torch.cat([torch.zeros(len(source)), torch.ones(len(target))]).long()
        domain_loss = F.cross_entropy(domain_logits, domain)
        return {"loss": task + domain_loss, "logits": logits, "task_loss": task.detach(),
                "domain_loss": domain_loss.detach(), "lambda": torch.tensor(lam),
                "domain_accuracy": (domain_logits.argmax(-1) == domain).float().mean().detach()}


def text_only(ds: Dataset) -> Dataset:
    """Only the text: target sentences must carry no labels (nor anything else) into a batch."""
    return ds.select_columns(["text"])


def features(model: nn.Module, data: Dataset, tokenizer, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """First-token states of every sentence, in the dataset's order (what the domain discriminator sees)."""
    return map_batches(model, text_only(data), lambda m, batch: sentence_features(m, batch)[1], tokenizer,
                       batch_size, max_length)


def proxy_a_distance(source: np.ndarray, target: np.ndarray, seed: int = 0, folds: int = 5) -> dict:
    r"""Ben-David et al.'s proxy A-distance :math:`2(1-2\epsilon)`, from a linear domain classifier's held-out error.

    The error is cross-validated (``folds`` stratified folds, every sentence held out once): one random split
    scores only part of the sentences, and at lesson sizes which part moves the distance as much as the
    features do. 0 means the domains cannot be told apart from these features (a classifier worse than chance
    counts as chance); 2 means perfectly separable.
    """
    if min(len(source), len(target)) < max(folds, 4):
        raise ValueError(f"proxy_a_distance needs at least {max(folds, 4)} sentences per domain "
                         f"({folds} folds), got {len(source)} and {len(target)}")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    x = np.concatenate([source, target])
    y = np.concatenate([np.zeros(len(source)), np.ones(len(target))])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    accuracy = cross_val_score(classifier, x, y, cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).mean()
    error = min(1.0 - float(accuracy), float(accuracy))
    return {"error": error, "proxy_a_distance": 2.0 * (1.0 - 2.0 * error)}


# ---------------------------------------------------------------------------------------------
# Label shift: re-estimating class priors without target labels
# ---------------------------------------------------------------------------------------------
def adjust_to_priors(probs: np.ndarray, source_priors, target_priors) -> np.ndarray:
    r"""Bayes' rule for a new prior: :math:`p'(y\mid x) \propto p(y\mid x)\,\pi'_y/\pi_y`, renormalised per row."""
    weighted = np.asarray(probs, dtype=np.float64) * (np.asarray(target_priors) / np.asarray(source_priors))
    return weighted / weighted.sum(axis=1, keepdims=True)


def estimate_priors(probs: np.ndarray, source_priors, max_iter: int = 1000, tol: float = 1e-8) -> np.ndarray:
    r"""EM of Saerens et al. (2002): :math:`\pi'^{(k+1)}_y = \frac1N\sum_i p^{(k)}(y\mid x_i)`, adjusting each round.

    The E-step re-weights every prediction to the current prior estimate; the M-step averages them. It assumes
    *label shift* (what a class's sentences look like, p(x|y), is the same in both domains; only the priors move)
    and converges to the target priors when the model's probabilities are calibrated on the source.
    """
    probs, source_priors = np.asarray(probs, dtype=np.float64), np.asarray(source_priors, dtype=np.float64)
    if not np.isclose(source_priors.sum(), 1.0) or (source_priors <= 0).any():
        raise ValueError(f"source_priors must be positive and sum to 1, got {source_priors.tolist()}")
    if probs.ndim != 2 or probs.shape[1] != len(source_priors):
        raise ValueError(f"probs must be (sentences, {len(source_priors)} classes), got shape {probs.shape}")
    if (probs < 0).any() or not np.allclose(probs.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs must be probabilities (rows >= 0 summing to 1); "
                         "turn logits into them with evaluate.softmax")
    priors = source_priors.copy()
    for _ in range(max_iter):
        new = adjust_to_priors(probs, source_priors, priors).mean(axis=0)
        if np.abs(new - priors).max() < tol:
            return new
        priors = new
    return priors


def label_priors(labels, num_classes: int) -> np.ndarray:
    """Class frequencies of a set of labels (e.g. the source training labels the model learned from)."""
    counts = np.bincount(np.asarray(list(labels)), minlength=num_classes).astype(np.float64)
    return counts / counts.sum()


# ---------------------------------------------------------------------------------------------
# Augmentation for scarce labels
# ---------------------------------------------------------------------------------------------
def augment_labelled(ds: Dataset, copies: int = 2, seed: int = 0, **kwargs) -> Dataset:
    """The labelled set plus ``copies`` perturbed variants of each sentence carrying its label (``distill.augment``)."""
    columns = [c for c in ("text", "label", "domain") if c in ds.column_names]
    original = ds.select_columns(columns)
    variants = augment(original, copies=copies, seed=seed, keep_labels=True, **kwargs).select_columns(columns)
    with quiet_datasets():
        return concatenate_datasets([original, variants.cast(original.features)])
