"""Checkpoints of a training run as tensors and plain data only: safetensors for tensors, JSON for the rest.

Nothing is unpickled on resume (a pickle can run code when it is loaded). ``checkpoint.json`` names the tensor
file it belongs to and that file's sha256, and is replaced last, so a run killed while saving leaves the previous
checkpoint whole; a damaged, altered or mismatched checkpoint is refused with its path named.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .corpus import sha256_of   # the one file hash: the corpus checks its download with it

INDEX = "checkpoint.json"     # the checkpoint's plain data; written last, it commits a save
LEGACY = "checkpoint.pt"      # the older pickle format, never loaded
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be used: damaged, from another run, or in a format that is not loaded."""


def encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Plain JSON data for ``value``; its tensors go into ``tensors`` under the keys the data names."""
    if torch.is_tensor(value):
        key = str(len(tensors))
        tensors[key] = value.detach().cpu().contiguous().clone()   # a clone: safetensors refuses shared memory
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: encode(v, tensors) for k, v in value.items()}}
        return {"__items__": [[encode(k, tensors), encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [encode(v, tensors) for v in value]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"cannot store a {type(value).__name__} in a checkpoint (tensors and plain data only)")


def decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of ``encode``."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__dict__" in value:
        return {k: decode(v, tensors) for k, v in value["__dict__"].items()}
    if "__items__" in value:
        return {decode(k, tensors): decode(v, tensors) for k, v in value["__items__"]}
    return tuple(decode(v, tensors) for v in value["__tuple__"])


def _replace(path: Path, write) -> None:
    """Write through a temporary file and rename it into place: a reader sees the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save(directory: str | Path, state: dict, epoch: int) -> Path:
    """Save ``state`` (nested dicts, lists, tensors, numbers) after ``epoch``; returns the index file."""
    from safetensors.torch import save_file
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    plain = encode(state, tensors)
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{directory}: refusing to save a checkpoint with non-finite values")
    name = f"checkpoint-epoch{epoch}.safetensors"
    _replace(directory / name, lambda tmp: save_file(tensors, str(tmp)))
    index = {"format": FORMAT, "epoch": epoch, "tensors": name, "sha256": sha256_of(directory / name), "state": plain}
    _replace(directory / INDEX, lambda tmp: tmp.write_text(json.dumps(index)))
    for old in directory.glob("checkpoint-epoch*.safetensors"):
        if old.name != name:
            old.unlink()
    return directory / INDEX


def exists(directory: str | Path | None) -> bool:
    """Whether ``directory`` holds a checkpoint of either format."""
    return bool(directory) and any((Path(directory) / n).exists() for n in (INDEX, LEGACY))


def load(directory: str | Path) -> tuple[int, dict]:
    """The epoch and state saved in ``directory``, verified; a damaged or unsafe checkpoint raises CheckpointError."""
    directory = Path(directory)
    index_path = directory / INDEX
    if not index_path.exists():
        if (directory / LEGACY).exists():
            raise CheckpointError(f"{directory / LEGACY}: an older pickle checkpoint; it is not loaded, because "
                                  "unpickling can run code. Start again with resume=False.")
        raise CheckpointError(f"{index_path}: no checkpoint here")
    try:
        index = json.loads(index_path.read_text())
        name, digest, epoch = index["tensors"], index["sha256"], int(index["epoch"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{index_path}: damaged checkpoint index ({err})") from None
    tensors = _load_tensors(directory / name, digest)
    return epoch, decode(index["state"], tensors)


def _load_tensors(path: Path, digest: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, after checking the file's hash and that every value is finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if not path.exists():
        raise CheckpointError(f"{path}: missing; the checkpoint is incomplete")
    if sha256_of(path) != digest:
        raise CheckpointError(f"{path}: damaged or altered (its sha256 differs from the one recorded at saving)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: damaged checkpoint ({err})") from None
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CheckpointError(f"{path}: holds non-finite values; not resumed")
    return tensors
