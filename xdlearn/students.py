"""Students: the smaller models a teacher is distilled into.

``make_student(teacher, tokenizer, kind)`` builds one by name: ``"N-layer"`` keeps N of the teacher's layers
(DistilBERT-style), ``"narrow"`` is a small transformer of the teacher's family trained from scratch, and
``"bilstm"``/``"cnn"`` are recurrent and convolutional classifiers over the teacher's word embeddings.
``prune_vocabulary`` shrinks any of them to the word pieces a task's text uses; ``learning_rate(kind)`` is the
rate each kind trains with. ``save``/``load`` handle every kind the same way: safetensors weights, a
``config.json`` and the tokenizer in one directory. Loading pretrained models and measuring a model's size stay
in ``models``.
"""
from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .models import ModelError, count_parameters, parameter_bytes, quiet_transformers, readable_weights
from .strategies import encoder_layers

FEED_FORWARD_FACTOR = 4   # BERT's feed-forward layer is 4x as wide as its hidden states
TOKENIZE_CHUNK = 1000     # sentences tokenised at a time while collecting the word pieces a text uses
LAYERS_KIND = re.compile(r"(\d+)-layer")   # "N-layer": N of the teacher's own layers
FRESH_KINDS = ("narrow", "bilstm", "cnn")   # students whose layers start from random weights
COPIED_LAYERS_LR = 1e-4   # peak rate for an "N-layer" student: the library's fine-tuning rate
FRESH_LAYERS_LR = 1e-3    # peak rate for a student whose layers start from random weights
WEIGHTS_FILE = "model.safetensors"        # the name save_pretrained uses too: one weights file for every kind
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer_config.json"  # written by every tokenizer's save_pretrained
KIND_KEY, ARGUMENTS_KEY = "kind", "arguments"   # config.json of a BiLSTM or CNN student
TRANSFORMERS_KEY = "model_type"                 # config.json of a transformers model
SAFETENSORS_METADATA = {"format": "pt"}         # what transformers writes, so its tools read our files too
LSTM_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")   # one direction's parameters, in nn.LSTM's order
FORWARD, BACKWARD = ("",), ("_reverse",)        # suffixes of nn.LSTM's parameter names, per direction
BOTH_DIRECTIONS = FORWARD + BACKWARD


def student_from_teacher(teacher: nn.Module, layers: Sequence[int]) -> nn.Module:
    """A shallower copy of a BERT-style teacher keeping the listed layers (DistilBERT-style init).

    Embeddings, the kept layers, the pooler and the classifier are copied; the result is a plain
    ``*ForSequenceClassification`` model, so ``save_pretrained`` and ``pipeline`` work as usual.
    """
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
    config = copy.deepcopy(teacher.config)
    config.hidden_size, config.num_hidden_layers, config.num_attention_heads = hidden_size, layers, heads
    config.intermediate_size = intermediate_size or FEED_FORWARD_FACTOR * hidden_size
    return type(teacher)(config)


class _StudentBase(nn.Module):
    """Shared parts of the non-transformer students: embeddings from the teacher and a label map."""

    kind = ""  # the name make_student and a saved config.json know the class by

    def __init__(self, vocab_size: int, embed_dim: int, num_labels: int, embeddings: torch.Tensor | None,
                 pad_token_id: int, labels: Sequence[str] | None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_token_id)
        if embeddings is not None:
            with torch.no_grad():
                self.embed.weight.copy_(embeddings)
        self.num_labels = num_labels
        self.id2label = dict(enumerate(labels or [f"LABEL_{i}" for i in range(num_labels)]))

    def arguments(self) -> dict:
        """Constructor arguments that rebuild this student's shape, read from its modules.

        Read, not remembered: ``prune_vocabulary`` swaps in a smaller embedding after construction.
        """
        return {"vocab_size": self.embed.num_embeddings, "num_labels": self.num_labels,
                "embed_dim": self.embed.embedding_dim, "pad_token_id": self.embed.padding_idx,
                "labels": [self.id2label[i] for i in range(self.num_labels)]}

    def _output(self, logits: torch.Tensor, labels: torch.Tensor | None):
        from transformers.modeling_outputs import SequenceClassifierOutput
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class BiLSTMStudent(_StudentBase):
    """Tang et al. (2019): embeddings -> BiLSTM -> max-pool over tokens -> MLP, over the teacher's tokens."""

    kind = "bilstm"

    def __init__(self, vocab_size: int, num_labels: int = 2, embed_dim: int = 384, hidden: int = 128,
                 embeddings: torch.Tensor | None = None, pad_token_id: int = 0, dropout: float = 0.1,
                 labels: Sequence[str] | None = None):
        super().__init__(vocab_size, embed_dim, num_labels, embeddings, pad_token_id, labels)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, num_labels))

    def arguments(self) -> dict:
        """Constructor arguments that rebuild this student's shape (see ``_StudentBase.arguments``)."""
        return {**super().arguments(), "hidden": self.lstm.hidden_size, "dropout": self.head[0].p}

    def forward(self, input_ids, attention_mask=None, labels=None, **_):
        ids = input_ids.t().contiguous()   # time-major: the fused LSTM kernel's layout (int8 embeddings need it dense)
        mask = None if attention_mask is None else attention_mask.t()
        if not isinstance(self.lstm, nn.LSTM):   # int8 (deploy.quantize): its packed weights need its own forward
            return self._output(self.head(self._pool_packed(ids, mask)), labels)
        if mask is None or bool(mask.all()):   # no padding: one call, both directions
            return self._output(self.head(self._lstm(self.embed(ids), BOTH_DIRECTIONS).amax(dim=0)), labels)
        return self._output(self.head(self._pool_padded(ids, mask)), labels)

    def _pool_packed(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Max-pooled states from ``self.lstm``'s own forward over a packed batch: the path of a quantized LSTM."""
        lengths = torch.full((ids.shape[1],), ids.shape[0]) if mask is None else mask.sum(0).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, enforce_sorted=False)
        states = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], padding_value=float("-inf"),
                                                  total_length=ids.shape[0])[0]
        return states.amax(dim=0)

    def _pool_padded(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Max-pooled states of a right-padded, time-major batch, without packing.

        The forward direction reads padding only after a sentence's last token, so its states there are exact.
        The backward direction must start at that last token: it runs over each sentence reversed in place
        (padding left where it was), which yields its states in reverse order, and the max does not care.
        Packing gives the same states but steps through the tokens in a handful of small operations each;
        here each direction is one fused call.
        """
        lengths = mask.sum(0)
        positions = torch.arange(mask.shape[0], device=mask.device).unsqueeze(1)
        reversed_ids = ids.gather(0, torch.where(positions < lengths, lengths - 1 - positions, positions))
        states = torch.cat([self._lstm(self.embed(ids), FORWARD), self._lstm(self.embed(reversed_ids), BACKWARD)],
                           dim=-1)
        return states.masked_fill_(mask.unsqueeze(-1) == 0, float("-inf")).amax(dim=0)

    def _lstm(self, embedded: torch.Tensor, directions: tuple[str, ...]) -> torch.Tensor:
        """``self.lstm``'s states over time-major ``embedded`` in the given directions, one fused call, zero start."""
        lstm = self.lstm
        weights = [getattr(lstm, f"{name}_l0{direction}") for direction in directions for name in LSTM_WEIGHTS]
        zeros = embedded.new_zeros(len(directions), embedded.shape[1], lstm.hidden_size)
        return torch.lstm(embedded, (zeros, zeros), weights, True, 1, 0.0, self.training, len(directions) == 2,
                          False)[0]


class CNNStudent(_StudentBase):
    """Kim (2014)-style: embeddings -> parallel 1-D convolutions (widths 2-4) -> max-pool -> linear."""

    kind = "cnn"

    def __init__(self, vocab_size: int, num_labels: int = 2, embed_dim: int = 384, channels: int = 128,
                 widths: Sequence[int] = (2, 3, 4), embeddings: torch.Tensor | None = None,
                 pad_token_id: int = 0, dropout: float = 0.1, labels: Sequence[str] | None = None):
        super().__init__(vocab_size, embed_dim, num_labels, embeddings, pad_token_id, labels)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, w, padding=w - 1) for w in widths)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels * len(widths), num_labels))
        self._taps: tuple[list, torch.Tensor] | None = None   # see _tap_matrix: derived from the weights, never saved

    def arguments(self) -> dict:
        """Constructor arguments that rebuild this student's shape (see ``_StudentBase.arguments``)."""
        return {**super().arguments(), "channels": self.convs[0].out_channels,
                "widths": [conv.kernel_size[0] for conv in self.convs], "dropout": self.head[0].p}

    def forward(self, input_ids, attention_mask=None, labels=None, **_):
        x = self.embed(input_ids)
        padded = attention_mask is not None and not bool(attention_mask.all())  # else nothing to zero or hide
        if padded:
            x = x * attention_mask.unsqueeze(-1)   # pads = 0
        lengths = attention_mask.sum(1, keepdim=True) if padded else None
        pool = self._pool_by_convolution if torch.is_grad_enabled() else self._pool_by_taps
        return self._output(self.head(torch.cat(pool(x, lengths), dim=-1)), labels)

    def _pool_by_convolution(self, x: torch.Tensor, lengths: torch.Tensor | None) -> list[torch.Tensor]:
        """Each convolution's pooled features, through ``nn.Conv1d``: the path training differentiates."""
        x = x.transpose(1, 2).contiguous()   # (batch, embed, tokens), copied once for all the convolutions
        return [torch.relu(_window_max(conv(x), lengths, conv.kernel_size[0], dim=-1)) for conv in self.convs]

    def _pool_by_taps(self, x: torch.Tensor, lengths: torch.Tensor | None) -> list[torch.Tensor]:
        """The same features from one matrix product: every token times every tap of every convolution at once.

        A window's output is the sum, over its taps, of tap k applied to its k-th token; so one product of the
        tokens with all taps side by side, then shifted sums, gives every convolution. One large product keeps
        both cores busy where ``conv1d`` on one sentence falls back to a single-threaded kernel.
        """
        products = x @ self._tap_matrix()   # (batch, tokens, taps x channels)
        pooled, column, tokens = [], 0, x.shape[1]
        for conv in self.convs:
            width, channels = conv.kernel_size[0], conv.out_channels
            windows = products.new_zeros(x.shape[0], tokens + width - 1, channels)
            for tap in range(width):  # window t reads token t + tap - (width - 1), as padding=width - 1 places it
                shift = width - 1 - tap
                windows[:, shift:shift + tokens] += products[:, :, column + tap * channels:column + (tap + 1) * channels]
            column += width * channels
            pooled.append(torch.relu(_window_max(windows, lengths, width, dim=1) + conv.bias))  # bias commutes with max
        return pooled

    def _tap_matrix(self) -> torch.Tensor:
        """Every convolution's taps side by side, (embed, taps x channels); rebuilt only when a weight changes."""
        weights = [conv.weight for conv in self.convs]
        key = [(weight, weight._version, weight.data_ptr()) for weight in weights]
        if self._taps is None or any(a[0] is not b[0] or a[1:] != b[1:] for a, b in zip(self._taps[0], key)):
            matrix = torch.cat([weight[:, :, tap].t() for weight in weights for tap in range(weight.shape[-1])], dim=1)
            self._taps = (key, matrix.detach())
        return self._taps[1]


def _window_max(values: torch.Tensor, lengths: torch.Tensor | None, width: int, dim: int) -> torch.Tensor:
    """Max of convolution outputs over positions (``dim``); given ``lengths``, windows wholly in the padding cannot win.

    Masking happens in place: ``values`` is a fresh output nobody else reads.
    """
    if lengths is not None:
        position = torch.arange(values.shape[dim], device=values.device)
        hidden = (position.unsqueeze(0) > lengths + width - 2).unsqueeze(1 if dim == -1 else -1)
        values = values.masked_fill_(hidden, float("-inf"))
    return values.amax(dim=dim)


EMBEDDING_STUDENTS = {cls.kind: cls for cls in (BiLSTMStudent, CNNStudent)}   # kind -> class, for build and load


def teacher_embeddings(teacher: nn.Module) -> torch.Tensor:
    """The teacher's word-embedding matrix (vocab x hidden), to initialise a student's embeddings."""
    return teacher.get_input_embeddings().weight.detach().clone()


def rnn_student(teacher: nn.Module, tokenizer, kind: str = "bilstm", **kwargs) -> nn.Module:
    """A BiLSTM or CNN student over the teacher's vocabulary, embeddings copied from the teacher."""
    weights = teacher_embeddings(teacher)
    labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    common = dict(vocab_size=weights.shape[0], num_labels=teacher.config.num_labels, embed_dim=weights.shape[1],
                  embeddings=weights, pad_token_id=tokenizer.pad_token_id or 0, labels=labels)
    if kind not in EMBEDDING_STUDENTS:
        raise ModelError(f"kind must be 'bilstm' or 'cnn', got {kind!r}")
    return EMBEDDING_STUDENTS[kind](**common, **kwargs)


def prune_vocabulary(model: nn.Module, tokenizer, texts: Sequence[str], out_dir: str | os.PathLike):
    """Keep only the embedding rows of tokens ``texts`` use (plus special tokens), remapping token ids.

    Embeddings dominate a small student's size (30,522 rows); a task's text uses a few thousand.
    Returns ``(model, tokenizer)``: the model with a smaller embedding matrix (changed in place) and a
    tokenizer over the kept vocabulary, saved in ``out_dir``. WordPiece picks the longest known piece,
    and every piece used on ``texts`` is kept, so those texts tokenise to the same pieces as before.
    """
    from transformers import AutoTokenizer
    used = set(tokenizer.all_special_ids)
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        for ids in tokenizer(list(texts[start:start + TOKENIZE_CHUNK]))["input_ids"]:  # untruncated: every piece
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


def _unknown_kind(kind: str) -> ModelError:
    """The one error for a student name that is none of the kinds."""
    return ModelError(f"unknown student {kind!r}: use 'N-layer' (e.g. '2-layer'), 'narrow', 'bilstm' or 'cnn'")


def make_student(teacher: nn.Module, tokenizer, kind: str = "2-layer", seed: int | None = None) -> nn.Module:
    """A student by name: ``"N-layer"`` (from teacher layers), ``"narrow"``, ``"bilstm"`` or ``"cnn"``.

    With ``seed`` its fresh weights are drawn from that seed alone, whatever ran before, and the caller's random
    state is left as it was (``seed=None`` draws from the global generator).
    """
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return _build_student(teacher, tokenizer, kind)


def _build_student(teacher: nn.Module, tokenizer, kind: str) -> nn.Module:
    """The student ``make_student`` names, drawn from the current random state."""
    match = LAYERS_KIND.fullmatch(kind)
    if match:
        return student_from_teacher(teacher, spread_layers(teacher.config.num_hidden_layers, int(match.group(1))))
    if kind == "narrow":
        return narrow_transformer(teacher)
    if kind in EMBEDDING_STUDENTS:
        return rnn_student(teacher, tokenizer, kind)
    raise _unknown_kind(kind)


def learning_rate(kind: str) -> float:
    """The peak learning rate a student of ``kind`` trains with: small steps for copied layers, larger for new ones.

    An ``"N-layer"`` student starts as the teacher's own layers, already good at the task, so it takes the small
    steps of fine-tuning (``COPIED_LAYERS_LR``) that keep what it has. The narrow transformer starts from random
    weights, and the BiLSTM and CNN train their layers from scratch on top of the copied embeddings: they have
    everything to learn in a few epochs, so they take ten times larger steps (``FRESH_LAYERS_LR``).
    """
    if LAYERS_KIND.fullmatch(kind):
        return COPIED_LAYERS_LR
    if kind in FRESH_KINDS:
        return FRESH_LAYERS_LR
    raise _unknown_kind(kind)


def profile(model: nn.Module, data, tokenizer=None) -> dict:
    """What a student costs to serve: parameters, MB of weights, measured sentences/s and counted FLOPs on ``data``.

    The same for every seed of a kind (a seed changes weights, not shapes), so one student of each kind is profiled.
    """
    from .evaluate import latency
    from .flops import inference_flops
    return {"parameters": count_parameters(model), "megabytes": parameter_bytes(model) / 1e6,
            "speed": latency(model, data, tokenizer)["examples_per_second"],
            "flops": inference_flops(model, data, tokenizer)}


def save(model: nn.Module, tokenizer, directory: str | os.PathLike) -> Path:
    """Write a student of any kind with its tokenizer beside it, weights as safetensors, for ``load`` to rebuild.

    Transformer students go through ``save_pretrained`` (so ``pipeline`` serves them too); BiLSTM and CNN
    students write ``model.safetensors`` and a ``config.json`` naming their kind and constructor arguments.
    Pass the tokenizer the student reads with: the teacher's, or the one ``prune_vocabulary`` wrote.
    """
    from transformers import PreTrainedModel
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    if isinstance(model, _StudentBase):
        save_file(model.state_dict(), str(path / WEIGHTS_FILE), metadata=SAFETENSORS_METADATA)
        (path / CONFIG_FILE).write_text(json.dumps(student_config(model), indent=2) + "\n", encoding="utf-8")
    elif isinstance(model, PreTrainedModel):
        with quiet_transformers():
            model.save_pretrained(path)
    else:
        raise TypeError(f"{type(model).__name__} is not a student: expected a transformers model "
                        f"or one of {sorted(EMBEDDING_STUDENTS)}")
    tokenizer.save_pretrained(path)
    return path


def load(directory: str | os.PathLike) -> tuple[nn.Module, object]:
    """A student written by ``save``, of any kind, in eval mode, and its tokenizer; weights must fit exactly."""
    from transformers import AutoTokenizer
    path = Path(directory)
    config = _saved_config(path)
    if KIND_KEY in config:
        with readable_weights(path):
            model = _load_embedding_student(path, config)
    elif TRANSFORMERS_KEY in config:
        with readable_weights(path):
            model = _load_transformer_student(path)
    else:
        raise ModelError(f"{path / CONFIG_FILE}: names neither a student kind ({KIND_KEY!r}) "
                         f"nor a transformers model ({TRANSFORMERS_KEY!r})")
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer


def _saved_config(path: Path) -> dict:
    """``config.json`` of a saved student, after checking that its weights and tokenizer are there too."""
    if not path.is_dir():
        raise ModelError(f"{path}: no such directory; save a student there with students.save")
    for name, what in ((CONFIG_FILE, "the config"), (WEIGHTS_FILE, "the weights"), (TOKENIZER_FILE, "the tokenizer")):
        if not (path / name).is_file():
            raise ModelError(f"{path}: {name} is missing ({what} of a student saved with students.save)")
    try:
        return json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelError(f"{path / CONFIG_FILE}: not valid JSON ({err})") from None


def student_config(model: nn.Module) -> dict:
    """The ``config.json`` of a BiLSTM or CNN student: its kind and the arguments that rebuild its shape.

    One description for every place that writes such a student (``save`` here, ``deploy.save`` for int8).
    """
    return {KIND_KEY: model.kind, ARGUMENTS_KEY: model.arguments()}


def student_from_config(config: dict, path: Path) -> nn.Module:
    """A freshly initialised BiLSTM or CNN student of the shape ``config`` describes (``path`` names the save)."""
    kind = config[KIND_KEY]
    if kind not in EMBEDDING_STUDENTS:
        raise ModelError(f"{path / CONFIG_FILE}: unknown student kind {kind!r}; "
                         f"known kinds are {sorted(EMBEDDING_STUDENTS)} (transformer students use model_type)")
    try:
        return EMBEDDING_STUDENTS[kind](**config.get(ARGUMENTS_KEY, {}))
    except TypeError as err:
        raise ModelError(f"{path}: config.json does not describe a {kind} student: {err}") from None


def _load_embedding_student(path: Path, config: dict) -> nn.Module:
    """Rebuild a BiLSTM or CNN student from its config and load its safetensors weights strictly."""
    model = student_from_config(config, path)
    try:
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)), strict=True)
    except RuntimeError as err:
        raise ModelError(f"{path}: the weights and config.json do not make a {config[KIND_KEY]} student: "
                         f"{err}") from None
    return model


def _load_transformer_student(path: Path) -> nn.Module:
    """A transformer student through ``from_pretrained``, refused if any weight is missing, unused or misshapen."""
    from transformers import AutoModelForSequenceClassification
    with quiet_transformers():
        model, info = AutoModelForSequenceClassification.from_pretrained(path, output_loading_info=True)
    problems = {key: sorted(keys) for key, keys in info.items() if keys and key != "error_msgs"}
    if problems or info.get("error_msgs"):
        raise ModelError(f"{path}: the weights do not fit the model config.json describes: "
                         f"{problems or info['error_msgs']}")
    return model
