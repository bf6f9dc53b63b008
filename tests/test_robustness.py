"""Bad input, damaged files, divergence: each gets a clear error naming the culprit, never a silent wrong result."""
from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from xdlearn import checkpoint, objectives, train
from conftest import make_tiny_model, toy_sentences


# ---- divergence -------------------------------------------------------------------------------------------
class BreaksAt(objectives.Objective):
    """Cross-entropy that turns non-finite at one step: in the loss itself, or only in the gradients."""

    def __init__(self, step: int, where: str):
        super().__init__()
        self.step, self.where, self.calls = step, where, 0

    def forward(self, model, batch):
        out = objectives.CrossEntropy()(model, batch)
        self.calls += 1
        if self.calls == self.step and self.where == "loss":
            out["loss"] = out["loss"] * float("nan")
        elif self.calls == self.step:  # d sqrt(x)/dx at 0 is inf; times 0 gives NaN gradients, a finite loss
            out["loss"] = out["loss"] + 0.0 * torch.sqrt(model.classifier.weight.sum() * 0.0)
        return out


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_a_non_finite_loss_or_gradient_stops_training_at_its_step(tokenizer, tmp_path, where):
    model = make_tiny_model()
    with pytest.raises(train.TrainingDiverged, match=r"step 3 \(epoch 1\).*lower learning rate than lr=0.001"):
        train.fit(model, toy_sentences(96), BreaksAt(3, where), tokenizer=tokenizer, epochs=2, batch_size=16,
                  lr=1e-3, progress=False, checkpoint_dir=tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step never reached the weights
    assert not checkpoint.exists(tmp_path)  # and nothing of the broken run was saved


@pytest.mark.parametrize("setting, value", [("lr", -1.0), ("lr", 0.0), ("lr", float("nan")), ("warmup", 2.0),
                                            ("epochs", 0), ("batch_size", 0), ("weight_decay", -0.1)])
def test_fit_refuses_impossible_settings_before_any_work(tiny_model, setting, value):
    with pytest.raises(ValueError, match=rf"{setting}={value!r}: must be"):
        train.fit(tiny_model, toy_sentences(8), progress=False, **{setting: value})


# ---- checkpoints ------------------------------------------------------------------------------------------
SETTINGS = dict(epochs=2, batch_size=16, lr=1e-3, progress=False)


@pytest.fixture
def saved_run(tokenizer, tmp_path):
    """A run stopped after its first epoch, its checkpoint in tmp_path / 'ckpt'."""
    class Stop(Exception):
        pass

    class StopAfterFirstEpoch:
        def on_step(self, history):
            pass

        def on_epoch(self, history):
            raise Stop

    with pytest.raises(Stop):
        train.fit(make_tiny_model(), toy_sentences(64), tokenizer=tokenizer, checkpoint_dir=tmp_path / "ckpt",
                  monitor=StopAfterFirstEpoch(), **SETTINGS)
    return tmp_path / "ckpt"


def tensor_file(directory: Path) -> Path:
    return directory / json.loads((directory / checkpoint.INDEX).read_text())["tensors"]


def flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def with_nan_weights(path: Path) -> None:
    """Re-save the tensors with NaN weights and a matching hash: only the values are wrong."""
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(path))
    tensors = {k: torch.full_like(t, float("nan")) if t.is_floating_point() else t for k, t in tensors.items()}
    save_file(tensors, str(path))
    index_path = path.parent / checkpoint.INDEX
    index = json.loads(index_path.read_text())
    index["sha256"] = checkpoint._sha256(path)
    index_path.write_text(json.dumps(index))


DAMAGE = {
    "a flipped byte": (lambda d: flip_a_byte(tensor_file(d)), "damaged or altered"),
    "a truncated tensor file": (lambda d: tensor_file(d).write_bytes(tensor_file(d).read_bytes()[:100]),
                                "damaged or altered"),
    "an empty tensor file": (lambda d: tensor_file(d).write_bytes(b""), "damaged or altered"),
    "a missing tensor file": (lambda d: tensor_file(d).unlink(), "missing"),
    "a damaged index": (lambda d: (d / checkpoint.INDEX).write_text("{not json"), "damaged checkpoint index"),
    "NaN weights": (lambda d: with_nan_weights(tensor_file(d)), "non-finite"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_naming_its_path(saved_run, tokenizer, damage):
    spoil, message = DAMAGE[damage]
    spoil(saved_run)
    model = make_tiny_model(seed=3)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(checkpoint.CheckpointError, match=message) as error:
        train.fit(model, toy_sentences(64), tokenizer=tokenizer, checkpoint_dir=saved_run, resume=True, **SETTINGS)
    assert str(saved_run) in str(error.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing half-loaded


class RunsCode:
    """A pickle that, when loaded, creates a file: what a crafted checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_checkpoint_is_never_unpickled(tokenizer, tmp_path):
    marker = tmp_path / "code-ran"
    (tmp_path / "ckpt").mkdir()
    with open(tmp_path / "ckpt" / checkpoint.LEGACY, "wb") as fh:
        pickle.dump({"epoch": 0, "payload": RunsCode(marker)}, fh)
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint.pt: an older pickle checkpoint; it is not loaded"):
        train.fit(make_tiny_model(), toy_sentences(64), tokenizer=tokenizer, checkpoint_dir=tmp_path / "ckpt",
                  resume=True, **SETTINGS)
    assert not marker.exists()


def test_a_checkpoint_holds_tensors_and_plain_data_only(saved_run):
    names = sorted(p.name for p in saved_run.iterdir())
    assert names == ["checkpoint-epoch0.safetensors", "checkpoint.json"]
    index = json.loads((saved_run / checkpoint.INDEX).read_text())
    assert index["epoch"] == 0 and len(index["sha256"]) == 64
    assert set(index["state"]["__dict__"]["run"]["__dict__"]) >= {"data", "lr", "batch_size", "seed"}


def test_a_checkpoint_of_other_data_is_refused(saved_run, tokenizer):
    with pytest.raises(checkpoint.CheckpointError, match=r"different run.*'data'"):
        train.fit(make_tiny_model(), toy_sentences(64, seed=9), tokenizer=tokenizer, checkpoint_dir=saved_run,
                  resume=True, **SETTINGS)


def test_starting_over_on_a_checkpoint_says_so(saved_run, tokenizer):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train.fit(make_tiny_model(), toy_sentences(64), tokenizer=tokenizer, checkpoint_dir=saved_run,
                  **{**SETTINGS, "epochs": 1})
    assert any("resume=False starts over and replaces it" in str(w.message) for w in caught)
