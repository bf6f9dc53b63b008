"""Deployable models: int8 quantization of every kind, the safetensors-only int8 save format, what int8 buys."""
from __future__ import annotations

import ast
import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.ao.nn import quantized as nnq
from torch.ao.nn.quantized import dynamic as nnqd

import xdlearn
from xdlearn import data, deploy, evaluate, models, students, train
from conftest import make_tiny_model, toy_sentences

SENTENCES = ["what a good film", "a boring and very long story about nothing at all", "the phone was great",
             "awful", "I loved every minute of it", "the worst service I have ever had"]
KINDS = ["teacher", "2-layer", "narrow", "bilstm", "cnn"]
MAX_LOGIT_CHANGE = 0.02       # trained BiLSTM on toy sentences: int8 moved a logit by at most 0.0011 (range 0.18)
TEACHER_LOGIT_CHANGE = 0.05   # MiniLM, untrained head: at most 0.014 on SENTENCES
TEACHER_SIZE_RATIO = 0.3      # MiniLM's int8 weights file is 0.26x the float one (23.7 MB of 90.9 MB)
STUDENT_SIZE_RATIO = 0.3      # the students measured 0.26x (2-layer) to 0.28x (narrow, CNN)
NARROW_ROWS_RATIO = 0.35      # 32-wide embedding rows: each row's float scale and offset add 8 bytes to 32 (0.31x)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@pytest.fixture(scope="module")
def minilm():
    """The offline MiniLM teacher (a BertForSequenceClassification) and its tokenizer."""
    model, tokenizer = models.load_pretrained(labels=data.BINARY)
    return model.eval(), tokenizer


def model_of(kind: str, minilm) -> nn.Module:
    """The MiniLM teacher itself, or a student of ``kind`` made from it (untrained: shapes are what matter here)."""
    teacher, tokenizer = minilm
    return teacher if kind == "teacher" else students.make_student(teacher, tokenizer, kind).eval()


@torch.no_grad()
def logits_of(model: nn.Module, tokenizer, sentences=SENTENCES) -> torch.Tensor:
    """The model's logits on ``sentences``, padded as one batch."""
    return model(**tokenizer(list(sentences), padding=True, return_tensors="pt")).logits


def layer_types(model: nn.Module) -> list[type]:
    """The exact type of every module, in order."""
    return [type(module) for module in model.modules()]


@pytest.mark.parametrize("kind", ["teacher", "bilstm", "cnn"])
def test_quantize_makes_an_int8_copy_and_leaves_the_float_model_untouched(kind, minilm):
    model = copy.deepcopy(model_of(kind, minilm)).train()   # a copy: the module's teacher stays in eval mode
    before = {key: value.clone() for key, value in model.state_dict().items()}
    quantized = deploy.quantize(model)
    assert model.training and not quantized.training
    assert before.keys() == model.state_dict().keys()
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    float_types, int8_types = layer_types(model), layer_types(quantized)
    assert nn.Linear in float_types and nn.Linear not in int8_types and nn.LSTM not in int8_types
    assert int8_types.count(nnqd.Linear) == float_types.count(nn.Linear)
    assert int8_types.count(nnqd.LSTM) == float_types.count(nn.LSTM) == (kind == "bilstm")
    embedding = quantized.get_submodule(deploy.word_embedding_name(quantized))
    assert isinstance(embedding, nnq.Embedding) and int8_types.count(nnq.Embedding) == 1  # word embeddings only
    assert embedding.padding_idx == model.get_submodule(deploy.word_embedding_name(model)).padding_idx


@pytest.fixture(scope="module")
def trained_bilstm(tokenizer):
    """A BiLSTM student trained on the toy sentences: confident logits, so int8's effect on them means something."""
    student = students.rnn_student(make_tiny_model(), tokenizer, "bilstm", hidden=32)
    train.fit(student, toy_sentences(256, seed=1), tokenizer=tokenizer, epochs=3, lr=5e-3, batch_size=16,
              progress=False)
    return student.eval()


def test_quantize_save_and_load_silence_only_the_int8_deprecation_notices(minilm, tmp_path):
    _, tokenizer = minilm
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deploy.load(deploy.save(deploy.quantize(model_of("bilstm", minilm)), tokenizer, tmp_path / "bilstm"))
        with deploy._quantization_deprecations_silenced():   # the same words, another category: still shown
            warnings.warn("torch.ao.quantization is deprecated", FutureWarning)
            warnings.warn("something else is deprecated", DeprecationWarning)
    assert [(w.category, str(w.message)) for w in caught] == [
        (FutureWarning, "torch.ao.quantization is deprecated"), (DeprecationWarning, "something else is deprecated")]


def test_int8_logits_stay_close_to_the_float_ones(trained_bilstm, tokenizer, minilm):
    test = toy_sentences(128, seed=2)
    float_logits = evaluate.predict(trained_bilstm, test, tokenizer)
    int8_logits = evaluate.predict(deploy.quantize(trained_bilstm), test, tokenizer)
    assert evaluate.accuracy(test["label"], float_logits.argmax(-1)) > 0.9
    assert evaluate.agreement(float_logits, int8_logits) == 1.0
    assert abs(float_logits - int8_logits).max() < MAX_LOGIT_CHANGE
    teacher, minilm_tokenizer = minilm
    change = logits_of(deploy.quantize(teacher), minilm_tokenizer) - logits_of(teacher, minilm_tokenizer)
    assert change.abs().max() < TEACHER_LOGIT_CHANGE


@pytest.mark.parametrize("kind", KINDS)
def test_save_then_load_gives_identical_logits_for_every_kind(kind, minilm, tmp_path):
    _, tokenizer = minilm
    quantized = deploy.quantize(model_of(kind, minilm))
    path = deploy.save(quantized, tokenizer, tmp_path / kind)
    loaded, loaded_tokenizer = deploy.load(path)
    assert type(loaded) is type(quantized) and not loaded.training
    assert layer_types(loaded) == layer_types(quantized)
    assert loaded_tokenizer(SENTENCES)["input_ids"] == tokenizer(SENTENCES)["input_ids"]
    assert torch.equal(logits_of(loaded, loaded_tokenizer), logits_of(quantized, tokenizer))


def test_a_pruned_bilstm_round_trips(minilm, tmp_path):
    _, tokenizer = minilm
    student = model_of("bilstm", minilm)
    pruned, small_tokenizer = students.prune_vocabulary(student, tokenizer, SENTENCES, tmp_path / "vocabulary")
    quantized = deploy.quantize(pruned)
    loaded, loaded_tokenizer = deploy.load(deploy.save(quantized, small_tokenizer, tmp_path / "int8"))
    assert loaded.embed.num_embeddings == len(small_tokenizer) < len(tokenizer)
    assert torch.equal(logits_of(loaded, loaded_tokenizer), logits_of(quantized, small_tokenizer))


def test_the_saved_folder_holds_no_pickle_and_every_tensor_file_opens_as_safetensors(minilm, tmp_path):
    _, tokenizer = minilm
    path = deploy.save(deploy.quantize(model_of("bilstm", minilm)), tokenizer, tmp_path / "bilstm")
    files = [p for p in path.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in PICKLE_SUFFIXES]
    tensor_files = [p for p in files if p.suffix == ".safetensors"]
    assert [p.name for p in tensor_files] == [deploy.WEIGHTS_FILE]
    for file in tensor_files:
        with safe_open(str(file), framework="pt") as tensors:
            assert all(tensors.get_tensor(key) is not None for key in tensors.keys())
    manifest = json.loads((path / deploy.MANIFEST_FILE).read_text())
    assert manifest["format"] == deploy.FORMAT
    assert {entry["type"] for entry in manifest["modules"].values()} == {"embedding", "lstm", "linear"}
    with safe_open(str(path / deploy.WEIGHTS_FILE), framework="pt") as tensors:
        assert tensors.get_tensor("lstm.weight_ih_l0.int_repr").dtype == torch.int8
        assert tensors.get_tensor("embed.weight.int_repr").dtype == torch.uint8   # one scale and offset per row
        assert tensors.get_tensor("embed.weight.scale").shape == (len(tokenizer),)


def test_a_folder_that_is_not_an_int8_save_is_refused_by_name(minilm, tmp_path):
    _, tokenizer = minilm
    with pytest.raises(models.ModelError, match="nowhere: no such directory"):
        deploy.load(tmp_path / "nowhere")
    float_path = students.save(model_of("cnn", minilm), tokenizer, tmp_path / "float")
    with pytest.raises(models.ModelError, match=r"float: quantization.json is missing .*students.load"):
        deploy.load(float_path)
    path = deploy.save(deploy.quantize(model_of("cnn", minilm)), tokenizer, tmp_path / "int8")
    manifest = json.loads((path / deploy.MANIFEST_FILE).read_text())
    (path / deploy.MANIFEST_FILE).write_text(json.dumps({**manifest, "format": "something-else"}))
    with pytest.raises(models.ModelError, match=r"int8/quantization.json: format 'something-else'.*not written by"):
        deploy.load(path)
    (path / deploy.MANIFEST_FILE).write_text(json.dumps(manifest))
    (path / deploy.WEIGHTS_FILE).unlink()
    with pytest.raises(models.ModelError, match=r"int8: quantized.safetensors is missing \(the int8 and float"):
        deploy.load(path)


def test_stored_tensors_that_do_not_fit_the_architecture_are_refused(minilm, tmp_path):
    _, tokenizer = minilm
    path = deploy.save(deploy.quantize(model_of("bilstm", minilm)), tokenizer, tmp_path / "bilstm")
    config = json.loads((path / "config.json").read_text())
    config["arguments"]["hidden"] += 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(models.ModelError, match="bilstm: lstm has weights"):
        deploy.load(path)
    manifest = json.loads((path / deploy.MANIFEST_FILE).read_text())
    manifest["modules"]["lstm"]["type"] = "linear"
    (path / deploy.MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(models.ModelError, match=r"int8 modules differ .* only saved \[\('lstm', 'linear'\)\]"):
        deploy.load(path)
    with pytest.raises(TypeError, match="holds no int8 weights"):
        deploy.save(model_of("bilstm", minilm), tokenizer, tmp_path / "float")


@pytest.mark.parametrize("kind, ratio", [("teacher", TEACHER_SIZE_RATIO), ("bilstm", STUDENT_SIZE_RATIO),
                                         ("cnn", STUDENT_SIZE_RATIO)])
def test_the_int8_weights_file_is_a_fraction_of_the_float_one(kind, ratio, minilm):
    sizes = deploy.saved_mb(model_of(kind, minilm), minilm[1])
    assert sizes["int8"] < ratio * sizes["float"]


def test_measure_reports_size_accuracy_agreement_and_speed(trained_bilstm, tokenizer):
    result = deploy.measure(trained_bilstm, tokenizer, toy_sentences(16, seed=3), batch_sizes=(4, 16), repeats=1)
    assert result["int8_mb"] < NARROW_ROWS_RATIO * result["float_mb"]
    assert result["size_ratio"] == pytest.approx(result["int8_mb"] / result["float_mb"])
    assert result["float_accuracy"] > 0.9 and result["agreement"] == 1.0
    assert result["int8_accuracy"] == result["float_accuracy"]
    for batch_size in (4, 16):   # timings only exist here; how fast is for benchmarks/quantize.py to say
        speed = result["examples_per_second"][batch_size]
        assert speed["float"] > 0 and speed["speed_up"] == pytest.approx(speed["int8"] / speed["float"])


def test_no_module_below_deploy_imports_it():
    package = Path(xdlearn.__file__).parent
    for path in package.glob("*.py"):
        if path.stem == "deploy":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module != "deploy" and "deploy" not in [a.name for a in node.names], path.name
