"""Deployable models: int8 dynamic quantization, an int8 save format that is safetensors only, and what int8 buys.

``quantize(model)`` turns a teacher or a student of any kind into a smaller, CPU-faster copy: linear and LSTM
weights become int8 (activations are quantized on the fly, batch by batch: "dynamic"), and the word embeddings
become 8-bit rows. ``save``/``load`` write and read such a copy with nothing pickled: every tensor goes into one
safetensors file, and ``quantization.json`` says which modules hold int8 weights and how they are scaled.
``measure`` compares a float model with its int8 copy on one dataset: MB on disk, accuracy, agreement and speed.

This module sits above ``models``, ``students`` and ``evaluate``; none of them imports it.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.nn import quantized as nnq
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import default_dynamic_qconfig, float_qparams_weight_only_qconfig, quantize_dynamic

from . import evaluate, students
from .data import tokenize
from .models import ModelError, disk_size_mb, quiet_transformers, readable_weights

FORMAT = "xdlearn-int8-dynamic"      # the marker load checks: this folder holds an int8 model written by save
FORMAT_VERSION = 1
FORMAT_KEY, VERSION_KEY, MODULES_KEY = "format", "version", "modules"   # keys of quantization.json
MANIFEST_FILE = "quantization.json"  # format marker and the quantized modules: type, weight schemes, bias names
WEIGHTS_FILE = "quantized.safetensors"   # not model.safetensors: no float loader may mistake it for float weights
INT_SUFFIX, SCALE_SUFFIX, ZERO_POINT_SUFFIX = ".int_repr", ".scale", ".zero_point"   # one quantized weight
PER_TENSOR = "per_tensor_affine"     # one scale and zero point for the whole tensor (else one per row: per channel)
QUANTIZED_LAYERS = (nn.Linear, nn.LSTM)   # int8 weights, activations quantized on the fly
QUANTIZED_KINDS = {nnqd.Linear: "linear", nnqd.LSTM: "lstm", nnq.Embedding: "embedding"}   # module type -> name
DEPRECATIONS = ((DeprecationWarning, r"torch\.ao\.quantization is deprecated"),
                (UserWarning, r"torch\.quantize_per_tensor, torch\.quantize_per_channel and other quantized tensor"))


@contextlib.contextmanager
def _quantization_deprecations_silenced() -> Iterator[None]:
    """Hide torch 2.13's two deprecation notices for eager int8 quantization and no other warning (see ``quantize``)."""
    with warnings.catch_warnings():
        for category, message in DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def word_embedding_name(model: nn.Module) -> str | None:
    """The qualified name of a model's word embeddings (a transformer's input embeddings, a student's ``embed``)."""
    has_getter = hasattr(model, "get_input_embeddings")
    embedding = model.get_input_embeddings() if has_getter else getattr(model, "embed", None)
    return next((name for name, module in model.named_modules() if module is embedding), None)


def quantize(model: nn.Module) -> nn.Module:
    """An int8 copy of ``model`` for CPU inference (the float model is left as it was): smaller and faster.

    Linear and LSTM layers get int8 weights, one scale per tensor, with activations quantized on the fly
    (``torch.ao.quantization.quantize_dynamic`` with ``{nn.Linear, nn.LSTM}``). The word embeddings get 8-bit rows,
    each with its own float scale and offset (``float_qparams_weight_only_qconfig``): for a BiLSTM or CNN student
    the embedding matrix is nearly all of the model, and for MiniLM it is half. The transformers models only index
    their embeddings, so this works for them too: on MiniLM the int8 embeddings' output keeps a cosine of 0.9997 to
    the float one, and its weights file shrinks to 0.26x (0.64x with float embeddings). Convolutions, LayerNorm
    and position embeddings stay float.

    torch 2.13 marks this eager quantization API deprecated in favour of torchao (a separate package, on PyPI
    but not a dependency here), with a DeprecationWarning from ``torch.ao.quantization`` and a UserWarning on every
    creation of a ``qint8``/``quint8`` tensor. It still works, so it is used, and exactly those two notices are
    silenced (``DEPRECATIONS``, matched by message) while quantizing, saving and loading; no other warning is.
    """
    spec: dict = {layer: default_dynamic_qconfig for layer in QUANTIZED_LAYERS}
    embedding = word_embedding_name(model)
    if embedding is not None:
        spec[embedding] = float_qparams_weight_only_qconfig
    with _quantization_deprecations_silenced():
        quantized = quantize_dynamic(model, spec, dtype=torch.qint8)   # works on a deep copy
    if embedding is not None:   # the int8 embedding drops it; a student's arguments() (its config) reads it
        quantized.get_submodule(embedding).padding_idx = model.get_submodule(embedding).padding_idx
    return quantized.eval()


def quantized_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module of ``model`` that holds int8 weights, by qualified name."""
    return {name: module for name, module in model.named_modules() if type(module) in QUANTIZED_KINDS}


def _weights_and_biases(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A quantized module's int8 weights and float biases, by the names its own setter takes them back under."""
    if isinstance(module, nnqd.LSTM):
        return module.get_weight(), module.get_bias()
    if isinstance(module, nnqd.Linear):
        return {"weight": module.weight()}, ({} if module.bias() is None else {"bias": module.bias()})
    return {"weight": module.weight()}, {}


def _set_weights_and_biases(module: nn.Module, weights: dict[str, torch.Tensor], biases: dict[str, torch.Tensor]):
    """Hand stored weights to a quantized module's own setter, which packs them as quantize_dynamic did."""
    if isinstance(module, nnqd.LSTM):
        module.set_weight_bias({**weights, **biases})
    elif isinstance(module, nnqd.Linear):
        module.set_weight_bias(weights["weight"], biases.get("bias"))
    else:
        module.set_weight(weights["weight"])


def _scheme(weight: torch.Tensor) -> dict:
    """How one quantized tensor is scaled, for quantization.json: dtype, scheme, and the axis of per-row scales."""
    per_tensor = weight.qscheme() == torch.per_tensor_affine
    return {"dtype": str(weight.dtype).removeprefix("torch."), "qscheme": str(weight.qscheme()).removeprefix("torch."),
            "axis": None if per_tensor else weight.q_per_channel_axis()}


def _plain_tensors(key: str, weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """A quantized tensor as plain ones safetensors holds: its integers, its scale(s) and its zero point(s)."""
    if weight.qscheme() == torch.per_tensor_affine:
        scale = torch.tensor(weight.q_scale(), dtype=torch.float64)
        zero_point = torch.tensor(weight.q_zero_point(), dtype=torch.int64)
    else:
        scale, zero_point = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
    return {key + INT_SUFFIX: weight.int_repr(), key + SCALE_SUFFIX: scale, key + ZERO_POINT_SUFFIX: zero_point}


def _quantized_tensor(key: str, scheme: dict, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """The quantized tensor ``_plain_tensors`` took apart, rebuilt bit for bit (its parts are taken from ``tensors``).

    ``_make_per_*_quantized_tensor`` is torch's exact inverse of ``int_repr``: no float round trip, no rounding.
    """
    values, scale, zero_point = (tensors.pop(key + suffix) for suffix in (INT_SUFFIX, SCALE_SUFFIX, ZERO_POINT_SUFFIX))
    if scheme["qscheme"] == PER_TENSOR:
        weight = torch._make_per_tensor_quantized_tensor(values, scale.item(), zero_point.item())
    else:
        weight = torch._make_per_channel_quantized_tensor(values, scale, zero_point, scheme["axis"])
    if _scheme(weight) != scheme:
        raise ValueError(f"{key}: stored as {_scheme(weight)}, but quantization.json says {scheme}")
    return weight


def _float_state(model: nn.Module, quantized: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """The state_dict entries outside the quantized modules (LayerNorm, convolutions, float embeddings, buffers).

    The values share storage with the model, so copying into them sets the model's own parameters.
    """
    prefixes = tuple(f"{name}." for name in quantized)
    return {key: value for key, value in model.state_dict().items() if not key.startswith(prefixes)}


def _write_architecture(model: nn.Module, path: Path) -> None:
    """config.json of the float architecture: a student's kind and arguments, or a transformers model's config."""
    from transformers import PreTrainedModel
    if isinstance(model, tuple(students.EMBEDDING_STUDENTS.values())):
        config = json.dumps(students.student_config(model), indent=2)
        (path / students.CONFIG_FILE).write_text(config + "\n", encoding="utf-8")
    elif isinstance(model, PreTrainedModel):
        with quiet_transformers():
            model.config.save_pretrained(path)
    else:
        raise TypeError(f"{type(model).__name__}: expected a quantized transformers model "
                        f"or one of the students {sorted(students.EMBEDDING_STUDENTS)}")


def save(model: nn.Module, tokenizer, directory: str | os.PathLike) -> Path:
    """Write a model made by ``quantize`` with its tokenizer, every tensor in safetensors, for ``load`` to rebuild.

    ``quantized.safetensors`` holds, per quantized weight, ``<module>.<weight>.int_repr`` (int8, or uint8 for
    embedding rows), ``.scale`` and ``.zero_point`` (0-d per tensor, one per row per channel), the float biases
    under their own names, and every other state_dict entry as in the float model. ``quantization.json`` carries
    the format marker and each quantized module's type, weight schemes and bias names; ``config.json`` describes
    the float architecture as ``students.save`` writes it.
    """
    quantized = quantized_modules(model)
    if not quantized:
        raise TypeError(f"{type(model).__name__} holds no int8 weights: "
                        "save deploy.quantize(model), not the float model")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    _write_architecture(model, path)
    tensors, layout = {}, {}
    for name, module in quantized.items():
        weights, biases = _weights_and_biases(module)
        layout[name] = {"type": QUANTIZED_KINDS[type(module)], "weights": {k: _scheme(w) for k, w in weights.items()},
                        "biases": sorted(biases)}
        for key, weight in weights.items():
            tensors.update(_plain_tensors(f"{name}.{key}", weight))
        tensors.update({f"{name}.{key}": bias for key, bias in biases.items()})
    tensors.update(_float_state(model, quantized))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / WEIGHTS_FILE))
    manifest = {FORMAT_KEY: FORMAT, VERSION_KEY: FORMAT_VERSION, MODULES_KEY: layout}
    (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(path)
    return path


def _manifest(path: Path) -> dict:
    """quantization.json of an int8 save, after checking that every file is there and the format marker is ours."""
    if not path.is_dir():
        raise ModelError(f"{path}: no such directory; write an int8 model there with deploy.save")
    files = ((MANIFEST_FILE, "the format marker and quantized layout"), (WEIGHTS_FILE, "the int8 and float tensors"),
             (students.CONFIG_FILE, "the float architecture"), (students.TOKENIZER_FILE, "the tokenizer"))
    for name, what in files:
        if not (path / name).is_file():
            raise ModelError(f"{path}: {name} is missing ({what} of an int8 model saved with deploy.save; "
                             f"a float model saved with students.save loads with students.load)")
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelError(f"{path / MANIFEST_FILE}: not valid JSON ({err})") from None
    found = (manifest.get(FORMAT_KEY), manifest.get(VERSION_KEY)) if isinstance(manifest, dict) else (None, None)
    if found != (FORMAT, FORMAT_VERSION) or not isinstance(manifest.get(MODULES_KEY), dict):
        raise ModelError(f"{path / MANIFEST_FILE}: format {found[0]!r} version {found[1]!r} is not "
                         f"{FORMAT!r} version {FORMAT_VERSION} with its {MODULES_KEY!r}: not written by deploy.save")
    return manifest


def _float_architecture(path: Path) -> nn.Module:
    """The float model config.json describes, freshly initialised: its weights are about to be replaced."""
    try:
        config = json.loads((path / students.CONFIG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelError(f"{path / students.CONFIG_FILE}: not valid JSON ({err})") from None
    if students.KIND_KEY in config:
        return students.student_from_config(config, path)
    if students.TRANSFORMERS_KEY not in config:
        raise ModelError(f"{path / students.CONFIG_FILE}: names neither a student kind ({students.KIND_KEY!r}) "
                         f"nor a transformers model ({students.TRANSFORMERS_KEY!r})")
    from transformers import AutoConfig, AutoModelForSequenceClassification
    with quiet_transformers():
        return AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path))


def _restore_quantized(path: Path, layout: dict, modules: dict[str, nn.Module], tensors: dict) -> None:
    """Set every int8 module's weights from the stored tensors (taken out of ``tensors``), checking each shape."""
    found = {(name, QUANTIZED_KINDS[type(module)]) for name, module in modules.items()}
    stored = {(name, entry.get("type")) for name, entry in layout.items()}
    if found != stored:
        raise ModelError(f"{path / MANIFEST_FILE}: the int8 modules differ from those of config.json's architecture "
                         f"once quantized: only saved {sorted(stored - found)[:5]}, only rebuilt "
                         f"{sorted(found - stored)[:5]}")
    for name, module in modules.items():
        expected_weights, expected_biases = _weights_and_biases(module)
        try:
            weights = {k: _quantized_tensor(f"{name}.{k}", s, tensors) for k, s in layout[name]["weights"].items()}
            biases = {k: tensors.pop(f"{name}.{k}") for k in layout[name]["biases"]}
        except KeyError as err:
            raise ModelError(f"{path / WEIGHTS_FILE}: tensor {err} is missing") from None
        except ValueError as err:
            raise ModelError(f"{path}: {err}") from None
        given = {k: tuple(t.shape) for k, t in {**weights, **biases}.items()}
        wanted = {k: tuple(t.shape) for k, t in {**expected_weights, **expected_biases}.items()}
        if given != wanted:
            raise ModelError(f"{path}: {name} has weights {given}, but config.json's architecture needs {wanted}")
        _set_weights_and_biases(module, weights, biases)


def _restore_float(path: Path, model: nn.Module, modules: dict[str, nn.Module], tensors: dict) -> None:
    """Copy the float tensors into the model, strictly: none missing, none left over, same shapes and dtypes."""
    state = _float_state(model, modules)
    missing, unexpected = sorted(set(state) - set(tensors)), sorted(set(tensors) - set(state))
    if missing or unexpected:
        raise ModelError(f"{path / WEIGHTS_FILE}: does not fit config.json's architecture: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    with torch.no_grad():
        for key, target in state.items():
            if (target.shape, target.dtype) != (tensors[key].shape, tensors[key].dtype):
                raise ModelError(f"{path / WEIGHTS_FILE}: {key} is {tuple(tensors[key].shape)} {tensors[key].dtype}, "
                                 f"the architecture needs {tuple(target.shape)} {target.dtype}")
            target.copy_(tensors[key])


def load(directory: str | os.PathLike) -> tuple[nn.Module, object]:
    """An int8 model written by ``save``, in eval mode, and its tokenizer: the same logits as the model saved.

    The float architecture is built from config.json and quantized the same way (its random weights are never
    used); each int8 module then gets its stored integers and scales through its own setter, and every float
    tensor is copied in strictly. Nothing is unpickled: safetensors, JSON and the tokenizer's own files only.
    """
    from transformers import AutoTokenizer
    path = Path(directory)
    manifest = _manifest(path)
    model = quantize(_float_architecture(path))
    modules = quantized_modules(model)
    with readable_weights(path):
        tensors = load_file(str(path / WEIGHTS_FILE))
    with _quantization_deprecations_silenced():
        _restore_quantized(path, manifest[MODULES_KEY], modules, tensors)
    _restore_float(path, model, modules, tensors)
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model.eval(), tokenizer


def saved_mb(model: nn.Module, tokenizer, quantized: nn.Module | None = None) -> dict[str, float]:
    """MB of the float model's weights file (``students.save``) and its int8 copy's (``save``): disk is what ships.

    Only the weights file counts: the tokenizer beside it is the same for both.
    """
    quantized = quantize(model) if quantized is None else quantized
    with tempfile.TemporaryDirectory() as folder:
        float_mb = disk_size_mb(students.save(model, tokenizer, Path(folder) / "float") / students.WEIGHTS_FILE)
        int8_mb = disk_size_mb(save(quantized, tokenizer, Path(folder) / "int8") / WEIGHTS_FILE)
    return {"float": float_mb, "int8": int8_mb}


def measure(model: nn.Module, tokenizer, data, batch_sizes: Sequence[int] = (1, 64), repeats: int = 3) -> dict:
    """What int8 buys one float model on one labelled dataset: MB on disk, accuracy, agreement and speed-up.

    Speed is ``evaluate.latency`` (examples/second, fastest of ``repeats`` passes over ``data``) at each batch
    size; batch 1 is one request at a time, a larger batch is offline scoring. Agreement is the share of
    sentences on which the int8 copy predicts what the float model predicts.
    """
    quantized = quantize(model)
    sizes = saved_mb(model, tokenizer, quantized)
    data = tokenize(data, tokenizer)   # once: every pass below reads the same token ids
    labels = list(data["label"])
    float_logits, int8_logits = (evaluate.predict(m, data, tokenizer) for m in (model, quantized))
    speed = {}
    for batch_size in batch_sizes:
        rates = {name: evaluate.latency(m, data, tokenizer, batch_size=batch_size, repeats=repeats)
                 ["examples_per_second"] for name, m in (("float", model), ("int8", quantized))}
        speed[batch_size] = {**rates, "speed_up": rates["int8"] / rates["float"]}
    return {"float_mb": sizes["float"], "int8_mb": sizes["int8"], "size_ratio": sizes["int8"] / sizes["float"],
            "float_accuracy": evaluate.accuracy(labels, float_logits.argmax(-1)),
            "int8_accuracy": evaluate.accuracy(labels, int8_logits.argmax(-1)),
            "agreement": evaluate.agreement(float_logits, int8_logits), "examples_per_second": speed}
