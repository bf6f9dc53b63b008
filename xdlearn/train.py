"""ONE training loop, written to be read: ``fit(model, data, objective)``.

Fine-tuning, distillation, masked-LM and domain-adversarial training differ only in the objective
(see ``objectives.py``); they all run through the loop below. Accelerate places tensors and, under
``torchrun --nproc_per_node 2``, shards batches and averages gradients; in a notebook it is a no-op.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import checkpoint
from .data import BINARY, make_loader
from .infer import predict
from .metrics import metrics_from_logits
from .objectives import CrossEntropy, Objective, accuracy_of
from .runtime import progress_wanted, release_memory, set_seed

EPOCH_METRICS = ("accuracy", "macro_f1", "ece")   # scored on every evaluation set after each epoch
EVAL_BATCH_FACTOR = 2                             # no gradients to keep: evaluation batches can be larger


@dataclass
class History:
    """What happened during training: one row per optimiser step and one per epoch."""

    steps: list[dict] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)

    def losses(self) -> list[float]:
        """Per-step training losses, in order."""
        return [row["loss"] for row in self.steps]

    def metric(self, name: str) -> list[float]:
        """One per-epoch metric (e.g. ``"validation/accuracy"``) across epochs."""
        return [row[name] for row in self.epochs if name in row]

    @property
    def last(self) -> dict:
        """The final epoch's row (empty before the first epoch ends)."""
        return self.epochs[-1] if self.epochs else {}

    def to_dict(self) -> dict:
        """Plain data, ready for JSON."""
        return {"steps": self.steps, "epochs": self.epochs}

    def save(self, path: str | Path) -> None:
        """Write the history as JSON, atomically (an interrupted save leaves the previous file whole)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "History":
        """Read a history written by ``save``."""
        data = json.loads(Path(path).read_text())
        return cls(steps=data["steps"], epochs=data["epochs"])

    def plot(self, ax=None, **kwargs):
        """Loss curve with per-epoch metrics (see ``xdlearn.plots.plot_history``)."""
        from .plots import plot_history
        return plot_history(self, ax=ax, **kwargs)


def as_loader(data, tokenizer, batch_size: int, seed: int, max_length: int, shuffle: bool) -> DataLoader:
    """Accept a Dataset (raw or tokenised) or a ready DataLoader."""
    if isinstance(data, DataLoader):
        return data
    if not isinstance(data, Dataset):
        raise TypeError(f"expected a datasets.Dataset or DataLoader, got {type(data).__name__}")
    return make_loader(data, tokenizer, batch_size=batch_size, shuffle=shuffle, seed=seed,
                       max_length=max_length)


def parameter_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: decay weights, but not biases and LayerNorm (standard BERT practice)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():  # frozen ones too: unfreezing may wake them later
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr},
              {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
    return [g for g in groups if g["params"]]


def linear_warmup_decay(optimizer, warmup_steps: int, total_steps: int):
    """Learning rate rises linearly for ``warmup_steps``, then falls linearly to 0 at ``total_steps``.

    ``transformers.get_linear_schedule_with_warmup`` with the warm-up one step ahead: its first step runs at rate 0
    and moves no weight; here step ``t`` of the warm-up uses ``(t + 1) / warmup_steps`` of the rate. After the
    warm-up the two are identical (lesson 02 checks both facts).
    """
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def data_fingerprint(loader: DataLoader) -> str:
    """A hash of the rows a loader serves, so a checkpoint is never resumed on other data."""
    ds = loader.dataset
    if not isinstance(ds, Dataset):
        return f"{type(ds).__name__}:{len(ds)}"
    table = ds.with_format("arrow")[:]
    digest = hashlib.sha256()
    for name in sorted(table.column_names):
        digest.update(name.encode())
        digest.update(json.dumps(table.column(name).to_pylist()).encode())
    return digest.hexdigest()


def save_checkpoint(directory: Path, model, objective, optimizer, scheduler, epoch: int,
                    history: History, run: dict) -> None:
    """Everything needed to continue after epoch ``epoch``: tensors in safetensors, the rest in JSON, atomically."""
    state = {"model": model.state_dict(), "objective": objective.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "history": history.to_dict(), "run": run,
             "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                     "numpy": np.random.get_state()}}
    checkpoint.save(directory, state, epoch)


def load_checkpoint(directory: Path, model, objective, optimizer, scheduler, run: dict) -> tuple[int, History, dict]:
    """Restore a checkpoint; returns the first epoch still to train, the history so far, the RNG states."""
    epoch, state = checkpoint.load(directory)
    changed = {k: (state["run"].get(k), v) for k, v in run.items() if state["run"].get(k) != v}
    if changed:
        raise checkpoint.CheckpointError(
            f"{directory}: checkpoint is from a different run; settings differ (saved, now): {changed}. "
            "Use another checkpoint_dir or resume=False.")
    try:
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise checkpoint.CheckpointError(f"{directory}: checkpoint does not fit this model ({err})") from None
    return epoch + 1, History(**state["history"]), state["rng"]


def restore_rng(rng: dict | None) -> None:
    """Put the random generators back where a checkpoint left them (dropout masks continue exactly)."""
    if rng:
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])


def evaluate_during_training(model, eval_data, tokenizer, batch_size: int, max_length: int) -> dict:
    """Metrics for every evaluation set: ``{"<name>/accuracy": ..., "<name>/macro_f1": ...}``.

    Built from ``infer.predict`` and ``metrics``, which sit below this module: ``evaluate`` sits above it
    (its transfer matrix trains models), so importing it here would close a circle.
    """
    if eval_data is None:
        return {}
    sets = eval_data if isinstance(eval_data, Mapping) else {"validation": eval_data}
    out = {}
    for name, ds in sets.items():
        if "label" not in ds.column_names:
            raise ValueError(f"eval_data {name!r} needs a 'label' column to be scored")
        logits = predict(model, ds, tokenizer, batch_size=batch_size * EVAL_BATCH_FACTOR, max_length=max_length)
        scores = metrics_from_logits(logits, list(ds["label"]))
        out.update({f"{name}/{k}": scores[k] for k in EPOCH_METRICS})
    return out


def micro_batches(batch: dict, max_tokens: int | None) -> list[tuple[dict, float]]:
    """Slices of a padded batch of at most ``max_tokens`` positions each, with each slice's share of its sentences.

    Losses are means over sentences, so the slices' gradients, weighted by share and added up, are the whole batch's:
    a batch of long texts then needs the activation memory of a few short ones and trains the same.
    """
    n, width = batch["input_ids"].shape
    if max_tokens is None or n * width <= max_tokens:
        return [(batch, 1.0)]
    size = max(1, max_tokens // width)
    return [({k: v[i:i + size] if torch.is_tensor(v) and v.dim() and v.shape[0] == n else v for k, v in batch.items()},
             min(size, n - i) / n) for i in range(0, n, size)]


def merge_outputs(outputs: list[tuple[dict, float]]) -> dict:
    """One objective output for a batch run in slices: logits joined, every other number weighted by share."""
    if len(outputs) == 1:
        return outputs[0][0]
    number = lambda value: float(value.detach()) if torch.is_tensor(value) else float(value)  # noqa: E731
    merged = {k: sum(number(out[k]) * share for out, share in outputs) for k in outputs[0][0] if k != "logits"}
    if "logits" in outputs[0][0]:
        merged["logits"] = torch.cat([out["logits"].detach() for out, _ in outputs])
    return merged


class TrainingDiverged(RuntimeError):
    """The loss or the gradients stopped being finite numbers; the weights are left as they were before."""


def stop_if_diverged(accelerator, loss: torch.Tensor, norm: torch.Tensor, step: int, epoch: int, lr: float) -> None:
    """Stop at the first non-finite loss or gradient norm, before the update would spread it into the weights.

    The flag is summed over processes, so under torchrun every process stops at the same step.
    """
    bad = torch.tensor([float(not (torch.isfinite(loss) and torch.isfinite(norm)))])
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item():
        raise TrainingDiverged(
            f"training diverged at step {step} (epoch {epoch}): loss {float(loss):.4g}, gradient norm "
            f"{float(norm):.4g}. The weights are those before this step and no checkpoint of it was saved; "
            f"try a lower learning rate than lr={lr:g}.")


SETTING_RANGES = {"epochs": (1, math.inf), "batch_size": (1, math.inf), "max_length": (2, math.inf),
                  "lr": (0, math.inf), "weight_decay": (0, math.inf), "warmup": (0, 1), "max_grad_norm": (0, math.inf)}
ABOVE_ZERO = ("lr",)   # a zero learning rate trains nothing: refused like a negative one


def check_settings(**settings: float | None) -> None:
    """Refuse settings that cannot train, before any work starts, naming the one at fault."""
    for name, value in settings.items():
        if value is None and name == "max_grad_norm":  # None (or 0): no clipping
            continue
        low, high = SETTING_RANGES[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (number and low <= value <= high and (name not in ABOVE_ZERO or value > 0)):
            bound = f"above {low}" if name in ABOVE_ZERO else f"at least {low}"
            raise ValueError(f"{name}={value!r}: must be a finite number {bound}"
                             + (f" and at most {high}" if high < math.inf else ""))


def fit(model: nn.Module, train_data, objective: Objective | None = None, *, tokenizer=None,
        eval_data=None, epochs: int = 3, batch_size: int = 32, lr: float = 1e-4,
        weight_decay: float = 0.01, warmup: float = 0.1, max_grad_norm: float | None = 1.0,
        seed: int = 0, max_length: int = 128, regularizers: Iterable[Callable] = (),
        checkpoint_dir: str | Path | None = None, resume: bool = False, monitor=None,
        progress: bool = True, optimizer_groups: list[dict] | None = None, unfreezing=None,
        max_tokens: int | None = None) -> History:
    """Train ``model`` on ``train_data`` with ``objective`` (cross-entropy by default); return its History.

    ``eval_data`` is a Dataset or ``{name: Dataset}`` evaluated after every epoch; ``regularizers``
    are callables ``model -> loss`` added to the objective; ``monitor`` (e.g. a live plot) gets
    ``on_step(history)`` / ``on_epoch(history)``; ``checkpoint_dir`` + ``resume`` continue a run.
    Strategies (see ``strategies.py``): ``optimizer_groups`` (e.g. layer-wise learning rates) and
    ``unfreezing`` (e.g. ``GradualUnfreezing``, told the step number before each update).
    ``max_tokens`` bounds memory for long texts: a batch of more padded positions (sentences x longest) runs as
    slices whose gradients add up to the batch's (``micro_batches``); the update is the same, the peak lower.
    """
    from accelerate import Accelerator
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive number of padded positions per slice, got {max_tokens}")
    check_settings(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup=warmup,
                   max_grad_norm=max_grad_norm, max_length=max_length)
    set_seed(seed)
    objective = objective if objective is not None else CrossEntropy()
    loader = as_loader(train_data, tokenizer, batch_size, seed, max_length, shuffle=True)
    accelerator = Accelerator(cpu=True)
    prepared = accelerator.prepare(loader)  # under torchrun, this process's shard: the schedule counts its steps
    # the model's groups (or the caller's, e.g. layer-wise rates), then the objective's own parameters, at its rate
    groups = optimizer_groups or parameter_groups(model, lr, weight_decay)
    groups = groups + objective.optimizer_groups(lr, weight_decay)  # an objective's own parameters, at its rate
    optimizer = torch.optim.AdamW(groups, lr=lr, fused=True)  # one kernel for all weights, not a loop per tensor
    total_steps = epochs * len(prepared)
    scheduler = linear_warmup_decay(optimizer, int(warmup * total_steps), total_steps)
    run = {"epochs": epochs, "steps_per_epoch": len(prepared), "seed": seed, "lr": lr, "batch_size": batch_size,
           "weight_decay": weight_decay, "warmup": warmup, "max_grad_norm": max_grad_norm, "max_length": max_length,
           "processes": accelerator.num_processes,
           "data": data_fingerprint(loader) if checkpoint_dir is not None else None}  # hashed only to check a resume
    history, start_epoch, rng = History(), 0, None
    if checkpoint_dir is not None and checkpoint.exists(checkpoint_dir):
        if resume:
            start_epoch, history, rng = load_checkpoint(Path(checkpoint_dir), model, objective, optimizer,
                                                        scheduler, run)
        else:
            warnings.warn(f"{checkpoint_dir}: holds a checkpoint of an earlier run; resume=False starts over and "
                          "replaces it after the first epoch (pass resume=True to continue it)", stacklevel=2)
    if any(p.requires_grad for p in objective.parameters()):  # e.g. a domain discriminator
        objective = accelerator.prepare(objective)
    model, optimizer = accelerator.prepare(model, optimizer)
    restore_rng(rng)  # after prepare(), which may draw random numbers of its own
    sampler = getattr(loader, "batch_sampler", None)
    schedule_of = accelerator.unwrap_model(objective)  # the objective itself, also when wrapped for DDP
    show = progress_wanted(progress) and accelerator.is_main_process
    for epoch in range(start_epoch, epochs):
        if hasattr(prepared, "set_epoch"):
            prepared.set_epoch(epoch)  # Accelerate counts epochs itself; tell it where a resume starts
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # same seed + epoch -> same batches, also after a resume
        model.train()
        started, seen, losses = time.perf_counter(), 0, []
        bar = tqdm(prepared, desc=f"epoch {epoch + 1}/{epochs}", disable=not show, leave=False)
        for batch in bar:
            if unfreezing is not None:
                unfreezing.on_step(len(history.steps))
            lr_now = scheduler.get_last_lr()[0]                   # the rate this step uses
            schedule_of.set_progress(len(history.steps) / total_steps)
            parts, outputs, loss = micro_batches(batch, max_tokens), [], 0.0   # one part unless over max_tokens
            for i, (part, share) in enumerate(parts):
                with accelerator.no_sync(model) if i < len(parts) - 1 else contextlib.nullcontext():
                    out = objective(model, part)                   # forward pass + loss
                    part_loss = (out["loss"] + sum(reg(model) for reg in regularizers)) * share
                    accelerator.backward(part_loss)                # gradients (the parts add up to the batch's)
                outputs.append((out, share))
                loss += part_loss.detach()
            out = merge_outputs(outputs)
            accelerator.unscale_gradients()  # a no-op without mixed precision; then one batched norm (inf: no clip)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm or math.inf, foreach=True)
            stop_if_diverged(accelerator, loss, norm, len(history.steps) + 1, epoch + 1, lr)
            optimizer.step()                                       # update the weights
            scheduler.step()                                       # next learning rate
            optimizer.zero_grad()
            seen += len(batch["input_ids"])
            losses.append(loss.item())
            row = {"step": len(history.steps) + 1, "epoch": epoch + 1, "loss": losses[-1],
                   "lr": lr_now}
            row.update({k: float(v) for k, v in out.items() if k not in ("loss", "logits")})
            if "logits" in out and "labels" in batch:
                row["accuracy"] = accuracy_of(out["logits"].detach(), batch["labels"])
            history.steps.append(row)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if monitor is not None:
                monitor.on_step(history)
        seconds = time.perf_counter() - started
        model.eval()
        metrics = evaluate_during_training(accelerator.unwrap_model(model), eval_data, tokenizer,
                                           batch_size, max_length)
        history.epochs.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                               "seconds": seconds, "examples_per_second": seen / seconds, **metrics})
        if checkpoint_dir is not None and accelerator.is_main_process:
            save_checkpoint(Path(checkpoint_dir), accelerator.unwrap_model(model), accelerator.unwrap_model(objective),
                            optimizer, scheduler, epoch, history, run)
        accelerator.wait_for_everyone()
        if monitor is not None:
            monitor.on_epoch(history)
    model.eval()
    del optimizer, scheduler, prepared, accelerator
    release_memory()  # the optimiser's state is garbage now; do not let it inflate the process
    return history


def fine_tune(train_data, model: str | os.PathLike | None = None, labels=BINARY,
              seed: int = 0, **fit_kwargs):
    """A new pretrained model fine-tuned on ``train_data``; returns ``(model, tokenizer, history)``.

    The one place a fresh model is made and trained (a transfer matrix's ``train_fn``, a baseline):
    the head and the training both use ``seed``, so the result does not depend on what ran earlier.
    ``fit_kwargs`` go to ``fit`` (epochs, lr, batch_size, eval_data...).
    """
    from .models import load_pretrained
    net, tokenizer = load_pretrained(model, labels=labels, seed=seed)
    history = fit(net, train_data, tokenizer=tokenizer, seed=seed, **fit_kwargs)
    return net, tokenizer, history
