"""The real pretrained model on the real corpus, and the main job end to end (small sizes)."""
from __future__ import annotations

import json

import pytest

from xdlearn import cli, data, evaluate, models, students, train

CLEARLY_POSITIVE = "Absolutely wonderful, the best thing ever, highly recommended"
CLEARLY_NEGATIVE = "Awful, the worst thing ever, do not buy"


@pytest.mark.slow
def test_fine_tuned_minilm_beats_chance_on_a_held_out_target_domain():
    splits = data.domain_splits(["movies", "products"], seed=0, test_size=300, validation_size=50)
    model, tokenizer = models.load_pretrained(labels=data.BINARY)
    source = data.sample_labels(splits["movies"]["train"], 600, seed=0, balanced=False)
    train.fit(model, source, tokenizer=tokenizer, epochs=2, progress=False)
    scores = evaluate.evaluate(model, splits["products"]["test"], tokenizer)
    labels = list(splits["products"]["test"]["label"])
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    assert scores["accuracy"] > majority + 0.05, (scores, majority)
    assert scores["macro_f1"] > 0.6


@pytest.mark.slow
def test_the_main_job_writes_a_report_and_a_servable_model(tmp_path, capsys):
    from transformers import pipeline
    out = tmp_path / "report"
    # 4 epochs of batches of 8 (48 steps): enough for the served model to learn sentiment (1 epoch of 32 left it
    # near chance, P(positive) 0.50-0.56 for every sentence)
    code = cli.main(["run", "--source", "products", "--target", "tweets", "--train-size", "96",
                     "--budget", "32", "--epochs", "4", "--batch-size", "8", "--target-epochs", "1", "--test-size", "40",
                     "--validation-size", "20", "--transfer-size", "500", "--distill-epochs", "1",
                     "--source-only", "--no-progress", "--out", str(out)])
    assert code == 0
    assert str(out) in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert set(results["target"]) == {"source_only", "in_domain", "target_only", "source_then_target"}
    # the saved model, scored afresh on the same test split, gives the number the report quotes
    served_model, served_tokenizer = models.load_pretrained(out / "model")
    tweets_test = data.domain_splits(["tweets"], seed=0, test_size=40, validation_size=20)["tweets"]["test"]
    rescored = evaluate.evaluate(served_model, tweets_test, served_tokenizer)["accuracy"]
    assert results["target"]["source_then_target"] == pytest.approx(rescored, abs=1e-4)
    assert list(results["transfer_matrix"]) == ["products"]
    report = (out / "report.md").read_text()
    assert "transfer_matrix.png" in report and (out / "transfer_matrix.png").stat().st_size > 1000
    assert f"{100 * results['target']['source_only']:.1f}%" in report
    classify = pipeline("text-classification", model=str(out / "model"), device=-1)
    # the served model has learnt the task: at these sizes, seeds 0, 1 and 2 give P(positive) 0.91-0.94 and 0.095-0.265
    assert classify(CLEARLY_POSITIVE)[0]["label"] == "positive"
    assert classify(CLEARLY_NEGATIVE)[0]["label"] == "negative"
    for example in results["model"]["examples"]:  # served again from disk: the labels and scores the report shows
        served = classify(example["text"])[0]
        assert served["label"] == example["label"] and served["score"] == pytest.approx(example["score"], abs=1e-5)
    distilled = results["distillation"]
    assert distilled["parameters"]["student"] < distilled["parameters"]["teacher"]
    assert distilled["retained"] == pytest.approx(distilled["accuracy"]["student"] / distilled["accuracy"]["teacher"],
                                                  abs=1e-3)
    assert "## 4. A small student" in report
    # 96 training tweets is all the teacher can label: the report says so instead of echoing --transfer-size
    assert distilled["transfer_sentences"] == 96
    assert "labelled 96 unlabeled tweets sentences (all there were of the 500 asked for)" in report
    student = pipeline("text-classification", model=distilled["path"], device=-1)
    loaded, loaded_tokenizer = students.load(distilled["path"])
    for sentence in (CLEARLY_POSITIVE, CLEARLY_NEGATIVE):  # served from disk as the student in memory classifies
        logits = loaded(**loaded_tokenizer(sentence, return_tensors="pt")).logits[0]
        assert student(sentence)[0]["label"] == data.BINARY[int(logits.argmax())]
    # a second run never overwrites the first
    assert cli.main(["run", "--source", "products", "--target", "tweets", "--train-size", "16",
                     "--budget", "8", "--epochs", "1", "--target-epochs", "1", "--test-size", "8",
                     "--validation-size", "8", "--source-only", "--no-progress", "--out", str(out)]) == 0
    assert (out / "results.json").read_text() == json.dumps(results, indent=2)
    assert len([p for p in out.iterdir() if p.name.startswith("run-")]) == 1


@pytest.mark.slow
def test_the_distill_command_turns_a_saved_teacher_into_a_bilstm(tmp_path):
    teacher, tokenizer = models.load_pretrained(labels=data.BINARY)
    teacher.save_pretrained(tmp_path / "teacher")
    tokenizer.save_pretrained(tmp_path / "teacher")
    out = tmp_path / "distilled"
    assert cli.main(["distill", "--teacher", str(tmp_path / "teacher"), "--target", "products",
                     "--student", "bilstm", "--transfer-size", "64", "--budget", "16", "--distill-epochs", "1",
                     "--target-epochs", "1", "--test-size", "32", "--no-progress", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["kind"] == "bilstm" and results["teacher"] == str(tmp_path / "teacher")
    assert results["parameters"]["student"] < results["parameters"]["teacher"]
    speeds = results["examples_per_second"]  # speed itself is a benchmark's business, not a test's
    assert speeds["student"] > 0 and speeds["teacher"] > 0
    assert results["speedup"] == pytest.approx(speeds["student"] / speeds["teacher"], rel=0.02)
    assert "bilstm student, distilled" in (out / "report.md").read_text()
    student, _ = students.load(results["path"])  # saved as safetensors + config.json, like every kind
    assert isinstance(student, students.BiLSTMStudent) and results["size_mb"] > 0
    assert cli.main(["distill", "--teacher", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # nothing is written for a run that cannot start


def test_bad_options_exit_with_a_clear_message(capsys):
    assert cli.main(["run", "--source", "reddit"]) == 2
    assert "source='reddit' is not a domain" in capsys.readouterr().err
    assert cli.main(["--source", "movies", "--target", "movies"]) == 2
    assert "both 'movies'" in capsys.readouterr().err
    assert cli.main(["run", "--budget", "0"]) == 2
    assert "budget must be at least 1" in capsys.readouterr().err
    assert cli.main(["run", "--max-tokens", "0"]) == 2
    assert "max_tokens must be at least 1" in capsys.readouterr().err
    assert cli.main(["run", "--lr", "-1"]) == 2
    assert "lr must be a finite number above 0, got -1.0" in capsys.readouterr().err
    assert cli.main(["run", "--temperature", "0"]) == 2
    assert "temperature must be a finite number above 0, got 0.0" in capsys.readouterr().err
    assert cli.main(["run", "--validation-size", "0"]) == 2
    assert "validation_size must be at least 1" in capsys.readouterr().err
    assert cli.main(["run", "--student", "9-layer"]) == 2  # refused before training, not after it
    assert "student='9-layer': the teacher (minilm) has 6 layers; keep 1 to 6" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses a method it does not know
        cli.main(["run", "--adapt", "pseudo-labels"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'pseudo-labels'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mlm", "dann"])
def test_the_main_job_adapts_the_source_model_with_unlabeled_target_text(tmp_path, method):
    out = tmp_path / method
    assert cli.main(["run", "--source", "movies", "--target", "tweets", "--train-size", "64", "--budget", "16",
                     "--epochs", "1", "--target-epochs", "1", "--test-size", "40", "--validation-size", "20",
                     "--transfer-size", "64", "--student", "", "--adapt", method, "--source-only",
                     "--no-progress", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    adapted = results["adaptation"]
    assert adapted["method"] == method and adapted["unlabeled_sentences"] == 64
    assert set(adapted) >= {"target_zero_labels", "target_after_budget", "source_zero_labels", "source_after_budget"}
    report = (out / "report.md").read_text()
    name = {"mlm": "continued MLM pretraining", "dann": "DANN"}[method]
    assert f"| source + {name}, 0 target labels | {100 * adapted['target_zero_labels']:.1f}% |" in report
    assert f"With {name} on 64 unlabeled tweets sentences" in report
    assert (out / "adapted-encoder" / "config.json").exists() == (method == "mlm")
    assert results["config"]["adapt"] == method
