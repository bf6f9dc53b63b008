"""Students: from teacher layers, narrow, BiLSTM/CNN; vocabulary pruning; learning rates; save and load;
comparison widgets; and the import direction between train and evaluate."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import xdlearn
from xdlearn import models, students, train, widgets
from conftest import make_tiny_model, toy_sentences


def test_student_from_teacher_copies_the_chosen_layers(tiny_model):
    student = students.student_from_teacher(tiny_model, [1])
    assert student.config.num_hidden_layers == 1
    t, s = tiny_model.state_dict(), student.state_dict()
    assert torch.equal(s["bert.encoder.layer.0.attention.self.query.weight"],
                       t["bert.encoder.layer.1.attention.self.query.weight"])
    assert torch.equal(s["bert.embeddings.word_embeddings.weight"], t["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(s["classifier.weight"], t["classifier.weight"])
    with pytest.raises(models.ModelError, match="indices in 0..1"):
        students.student_from_teacher(tiny_model, [2])


def test_spread_layers_and_make_student_by_name(tiny_model, tokenizer):
    assert students.spread_layers(6, 2) == [0, 5]
    assert students.spread_layers(6, 3) == [0, 2, 5] or students.spread_layers(6, 3) == [0, 3, 5]
    assert students.spread_layers(6, 1) == [5]
    assert students.make_student(tiny_model, tokenizer, "1-layer").config.num_hidden_layers == 1
    assert students.make_student(tiny_model, tokenizer, "narrow").config.hidden_size == 128
    assert isinstance(students.make_student(tiny_model, tokenizer, "cnn"), students.CNNStudent)
    with pytest.raises(models.ModelError, match="unknown student"):
        students.make_student(tiny_model, tokenizer, "giant")


CLEAR = {"positive": "the story was wonderful and really great", "negative": "the story was terrible and really awful"}


@pytest.mark.parametrize("kind", ["bilstm", "cnn"])
def test_rnn_students_start_from_teacher_embeddings_and_learn(kind, tiny_model, tokenizer, toy, tmp_path):
    student = students.rnn_student(tiny_model, tokenizer, kind, **({"hidden": 32} if kind == "bilstm" else {"channels": 32}))
    assert torch.equal(student.embed.weight, tiny_model.bert.embeddings.word_embeddings.weight)
    history = train.fit(student, toy["train"], tokenizer=tokenizer, epochs=6, lr=5e-3, batch_size=16,
                        eval_data=toy["test"], progress=False)
    assert history.last["validation/accuracy"] > 0.9
    loaded, loaded_tokenizer = students.load(students.save(student, tokenizer, tmp_path / kind))
    for label, sentence in CLEAR.items():  # the trained student, loaded from disk, reads the sentiment words
        logits = loaded(**loaded_tokenizer(sentence, return_tensors="pt")).logits[0]
        assert loaded.id2label[int(logits.argmax())] == label, (sentence, logits)
    # padding must not change a prediction
    one = tokenizer(["the film was good"], return_tensors="pt")
    padded = tokenizer(["the film was good", "a much longer sentence with many more words in it"],
                       padding=True, return_tensors="pt")
    student.eval()
    assert torch.allclose(student(**one).logits[0], student(**padded).logits[0], atol=1e-5)


def test_pruned_vocabulary_keeps_predictions_and_shrinks_the_model(tiny_model, tokenizer, tmp_path):
    from transformers import pipeline
    texts = list(toy_sentences(60)["text"]) + ["Ünïcode and a much-longer, hyphenated   sentence!"]
    tiny_model.eval()
    before = tiny_model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    size_before = models.count_parameters(tiny_model)
    model, small_tok = students.prune_vocabulary(tiny_model, tokenizer, texts, tmp_path)
    assert len(small_tok) < 200 < len(tokenizer)
    assert models.count_parameters(model) == size_before - (len(tokenizer) - len(small_tok)) * 32
    for text in texts:  # the same word pieces, under new ids
        assert small_tok.tokenize(text) == tokenizer.tokenize(text)
    after = model(**small_tok(texts, padding=True, return_tensors="pt")).logits
    assert torch.allclose(before, after, atol=1e-5)
    model.save_pretrained(tmp_path)
    classify = pipeline("text-classification", model=str(tmp_path), device=-1)
    for i in (0, len(texts) - 1):  # served from disk, each sentence gets the class the model in memory gave it
        assert classify(texts[i])[0]["label"] == model.config.id2label[int(before[i].argmax())]


def test_comparison_widget_and_temperature_explorer(tokenizer):
    teacher, student = make_tiny_model(seed=1), make_tiny_model(seed=2)
    examples = toy_sentences(24)
    board = widgets.TeacherStudentComparison(teacher, student, tokenizer, examples)
    z_t = teacher.eval()(**tokenizer(list(examples["text"]), padding=True, return_tensors="pt")).logits
    z_s = student.eval()(**tokenizer(list(examples["text"]), padding=True, return_tensors="pt")).logits
    expected = (z_t.argmax(-1) == z_s.argmax(-1)).float().mean().item()
    assert board.summary["agreement"] == pytest.approx(expected)
    assert len(board.disagreements()) == round((1 - expected) * 24)
    board.only_disagree.value = True
    assert len(board.picker.options) == len(board.disagreements())
    result = board.compare("what a good film")
    assert set(result["teacher"]) == {"negative", "positive"}
    assert sum(result["student"].values()) == pytest.approx(1.0)
    board.typed.value = "what a good film"  # as if typed and submitted: the view follows
    assert "what a good film" in board.view.value

    explorer = widgets.TemperatureExplorer(np.array([[2.0, 0.0], [0.0, 0.0]]), ["a", "b"], ["neg", "pos"])
    assert explorer.entropy(1.0, 1) == pytest.approx(1.0)  # uniform over 2 classes = 1 bit
    assert explorer.entropy(10.0, 0) > explorer.entropy(1.0, 0) > explorer.entropy(0.5, 0)
    assert explorer.picker.value == 0 and "T = 1.0: entropy" in explorer.readout.value  # opens on the surest example
    explorer.slider.value = 4.0  # what the learner reads follows the slider: sigma([2, 0] / 4) and its entropy
    q = 1 / (1 + np.exp(-0.5))
    assert explorer.distribution(4.0, 0)[0] == pytest.approx(q)
    bits = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    assert f"T = 4.0: entropy {bits:.4f} bits</span>; neg {q:.3f}, pos {1 - q:.3f}" in explorer.readout.value


def test_one_learning_rate_rule_for_every_student_kind():
    for kind in ("1-layer", "2-layer", "3-layer"):  # the teacher's own layers: fine-tuning's small steps
        assert students.learning_rate(kind) == students.COPIED_LAYERS_LR == 1e-4
    for kind in ("narrow", "bilstm", "cnn"):         # layers from random weights: ten times larger steps
        assert students.learning_rate(kind) == students.FRESH_LAYERS_LR == 1e-3
    with pytest.raises(models.ModelError, match="unknown student 'giant'"):
        students.learning_rate("giant")


def test_the_job_trains_students_at_the_rate_the_rule_gives():
    import inspect
    from xdlearn import job
    source = inspect.getsource(job.distill_to_student)
    assert "lr = students.learning_rate(cfg.student)" in source
    assert source.count("lr=lr") == 2  # the distilled student and its label-only twin
    assert not hasattr(job, "_student_lr")



SENTENCES = ["what a good film", "a boring and very long story about nothing at all"]


def logits_of(model, tokenizer) -> torch.Tensor:
    """The model's logits on SENTENCES, padded as one batch."""
    return model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).logits


@pytest.mark.parametrize("kind", ["2-layer", "narrow", "bilstm", "cnn"])
def test_save_then_load_gives_the_same_student_for_every_kind(kind, tiny_model, tokenizer, tmp_path):
    student = students.make_student(tiny_model, tokenizer, kind).eval()
    path = students.save(student, tokenizer, tmp_path / kind)
    assert (path / "model.safetensors").is_file() and (path / "config.json").is_file()
    assert not [p for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pkl")]  # no pickles
    loaded, loaded_tokenizer = students.load(path)
    assert type(loaded) is type(student) and not loaded.training
    assert loaded_tokenizer(SENTENCES)["input_ids"] == tokenizer(SENTENCES)["input_ids"]
    assert torch.equal(logits_of(loaded, loaded_tokenizer), logits_of(student, tokenizer))


def test_a_pruned_bilstm_saves_its_smaller_vocabulary_and_loads_back(tiny_model, tokenizer, tmp_path):
    student = students.make_student(tiny_model, tokenizer, "bilstm").eval()
    pruned, small_tok = students.prune_vocabulary(student, tokenizer, SENTENCES, tmp_path / "vocab")
    path = students.save(pruned, small_tok, tmp_path / "student")
    loaded, loaded_tokenizer = students.load(path)
    assert loaded.embed.num_embeddings == len(small_tok) < len(tokenizer)
    assert torch.equal(logits_of(loaded, loaded_tokenizer), logits_of(pruned, small_tok))


def test_loading_an_incomplete_or_unknown_student_says_what_is_wrong(tiny_model, tokenizer, tmp_path):
    path = students.save(students.make_student(tiny_model, tokenizer, "cnn"), tokenizer, tmp_path / "cnn")
    with pytest.raises(models.ModelError, match="nowhere: no such directory"):
        students.load(tmp_path / "nowhere")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "kind": "giant"}))
    with pytest.raises(models.ModelError, match=r"cnn/config.json: unknown student kind 'giant'"):
        students.load(path)
    (path / "config.json").write_text(json.dumps({"arguments": config["arguments"]}))
    with pytest.raises(models.ModelError, match="names neither a student kind"):
        students.load(path)
    (path / "model.safetensors").unlink()
    with pytest.raises(models.ModelError, match=r"cnn: model.safetensors is missing \(the weights"):
        students.load(path)


def test_loading_weights_that_do_not_fit_the_config_is_refused(tiny_model, tokenizer, tmp_path):
    path = students.save(students.make_student(tiny_model, tokenizer, "bilstm"), tokenizer, tmp_path / "bilstm")
    config = json.loads((path / "config.json").read_text())
    config["arguments"]["hidden"] += 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(models.ModelError, match="bilstm: the weights and config.json do not make a bilstm student"):
        students.load(path)


def test_evaluate_does_not_import_train():
    """evaluate sits above train (its transfer matrix trains models): importing it must not load train."""
    code = "import sys, xdlearn.evaluate; print('xdlearn.train' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.stdout.strip() == "False", result.stderr


def relative_imports(module: str) -> set[str]:
    """Every xdlearn module ``module`` imports, at the top or inside a function."""
    tree = ast.parse((Path(xdlearn.__file__).parent / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
    return found


def test_train_and_evaluate_import_neither_each_other_nor_anything_above_them():
    assert "train" not in relative_imports("evaluate")
    assert not relative_imports("train") & {"evaluate", "distill", "adapt", "job", "widgets"}
    assert relative_imports("runtime") == set() and relative_imports("metrics") == set()


def test_profile_counts_a_students_size_and_work_and_measures_its_speed(tiny_model, tokenizer):
    sentences = toy_sentences(16)
    shallow = students.make_student(tiny_model, tokenizer, "1-layer")
    whole, half = students.profile(tiny_model, sentences, tokenizer), students.profile(shallow, sentences, tokenizer)
    assert whole["parameters"] == models.count_parameters(tiny_model)
    assert whole["megabytes"] == pytest.approx(models.parameter_bytes(tiny_model) / 1e6)
    assert whole["speed"] > 0 and half["parameters"] < whole["parameters"]
    assert 0 < half["flops"] < whole["flops"]   # one layer of two: less arithmetic per sentence
