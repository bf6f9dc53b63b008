"""Loading models offline first, failing fast for the hub, and size helpers."""
from __future__ import annotations

import pytest

from xdlearn import models


def test_default_name_resolves_to_the_packaged_minilm():
    path = models.default_model_path()
    assert (path / "config.json").exists() and (path / "model.safetensors").exists()
    for alias in (None, "minilm", "sentence-transformers/all-MiniLM-L6-v2"):
        assert models.resolve_model(alias) == str(path)


def test_load_pretrained_names_labels_and_counts_parameters():
    model, tokenizer = models.load_pretrained(labels=["neg", "neu", "pos"])
    assert model.config.id2label == {0: "neg", 1: "neu", 2: "pos"}
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    # 22.7M in the encoder + a 384x384 pooler-to-classifier head for 3 classes
    assert models.count_parameters(model) == 22_713_986 + 385
    assert tokenizer("hello world")["input_ids"][0] == tokenizer.cls_token_id
    with pytest.raises(models.ModelError, match="num_labels=2 but 3 labels"):
        models.load_pretrained(num_labels=2, labels=["a", "b", "c"])


def test_a_saved_directory_loads_and_sizes_agree(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path / "tiny")
    models.load_tokenizer().save_pretrained(tmp_path / "tiny")
    model, _ = models.load_pretrained(tmp_path / "tiny", num_labels=2)
    assert models.count_parameters(model) == models.count_parameters(tiny_model)
    on_disk = models.disk_size_mb(tmp_path / "tiny")
    in_memory = models.parameter_bytes(tiny_model) / 1e6
    assert in_memory < on_disk < in_memory + 2  # weights plus small config/tokenizer files
    assert models.describe(tiny_model)["trainable"] == models.count_parameters(tiny_model)


def test_hub_id_offline_fails_before_transformers_retries_naming_the_default(monkeypatch):
    import transformers

    def retrying_download(*args, **kwargs):  # transformers would retry the hub here for ~20 s
        raise AssertionError("load_pretrained should fail before asking transformers")
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", retrying_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(models.ModelError, match=r"offline default.*'minilm'.*save_pretrained"):
        models.load_pretrained("some-org/some-model-that-is-not-cached")


def test_bad_local_paths_are_named(tmp_path):
    with pytest.raises(models.ModelError, match="needs config.json"):
        models.resolve_model(tmp_path)
    with pytest.raises(models.ModelError, match="not a model directory"):
        models.resolve_model(str(tmp_path / "missing"))


@pytest.mark.parametrize("bars_before", [False, True])
def test_quiet_loading_restores_the_bar_setting_it_found(bars_before):
    """A load inside a lesson must not switch back on the bars ``lesson.setup()`` turned off (save_pretrained's)."""
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if bars_before else hf_logging.disable_progress_bar)()
    try:
        with models.quiet_transformers():
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled() is bars_before
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
