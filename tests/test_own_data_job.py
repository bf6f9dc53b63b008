"""Your own data through the `xdlearn` command: table files and review folders end to end, and bad input stopped early.

A tiny saved BERT (``--model``) keeps these runs to seconds; the real MiniLM runs the same code in test_main_job.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from xdlearn import cli, job
from conftest import toy_sentences
from resume import KILL_POINTS, comparable, command

SMALL = ["--train-size", "48", "--budget", "16", "--epochs", "1", "--target-epochs", "1", "--test-size", "12",
         "--validation-size", "8", "--transfer-size", "24", "--distill-epochs", "1", "--batch-size", "16",
         "--no-progress"]


def write_shops_csv(path: Path, rows: int = 80) -> Path:
    """A CSV as a user might have it: columns body, stars (neg/pos) and shop (two domains)."""
    import pandas as pd
    frames = []
    for shop, seed in (("books", 1), ("kitchen", 2)):
        ds = toy_sentences(rows, seed=seed)
        frames.append(pd.DataFrame({"body": ds["text"], "stars": ["neg", "pos"] * (rows // 2), "shop": shop}))
    pd.concat(frames).to_csv(path, index=False)
    return path


RUN = ["--text-column", "body", "--label-column", "stars", "--domain-column", "shop", "--source", "books",
       "--target", "kitchen", "--train-size", "48", "--budget", "16", "--epochs", "2", "--target-epochs", "2",
       "--test-size", "12", "--validation-size", "8", "--transfer-size", "24", "--distill-epochs", "2",
       "--batch-size", "16", "--student", "2-layer", "--adapt", "dann", "--no-progress"]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory, tiny_dir) -> tuple[list[str], Path]:
    """One uninterrupted run on a CSV of two shops (into an existing empty folder): its arguments and folder."""
    root = tmp_path_factory.mktemp("csv-run")
    args = ["run", "--data", str(write_shops_csv(root / "shops.csv")), "--model", tiny_dir, *RUN]
    out = root / "report"
    out.mkdir()  # an existing empty folder is used as it is
    assert cli.main([*args, "--out", str(out)]) == 0
    return args, out


def test_the_main_job_runs_on_your_csv_file(csv_run):
    args, out = csv_run
    results = json.loads((out / "results.json").read_text())
    assert list(results["transfer_matrix"]) == ["books", "kitchen"]
    assert list(results["transfer_matrix"]["books"]) == ["books", "kitchen"]
    assert results["domains"]["books"] == {"test": 12, "validation": 8, "train": 48} and results["stage"] == "done"
    assert set(results["target"]) == {"source_only", "in_domain", "target_only", "source_then_target"}
    assert results["config"]["data"] == [args[2]] and results["config"]["domain_column"] == "shop"
    assert {e["label"] for e in results["model"]["examples"]} <= {"neg", "pos"}  # the data's class names
    report = (out / "report.md").read_text()
    assert "# xdlearn report: books -> kitchen" in report and "## 4. A small student" in report
    assert f"{100 * results['target']['source_only']:.1f}%" in report
    assert results["distillation"]["kind"] == "2-layer" and Path(results["distillation"]["path"]).is_dir()
    assert results["adaptation"]["method"] == "dann" and results["adaptation"]["unlabeled_sentences"] == 24
    assert not (out / job.STATE).exists()  # the checkpoints of a finished run are gone


def write_review_folder(root: Path, reviews: int = 40) -> Path:
    """Two domains in the <domain>/{positive,negative}.review layout, review texts from the toy sentences."""
    for domain, seed in (("dvd", 3), ("toys", 4)):
        (root / domain).mkdir(parents=True)
        ds = toy_sentences(2 * reviews, seed=seed)
        for label, name in enumerate(("negative", "positive")):
            blocks = [f"<review>\n<review_text>\n{t}\n</review_text>\n</review>\n"
                      for t, y in zip(ds["text"], ds["label"]) if y == label]
            (root / domain / f"{name}.review").write_text("".join(blocks))
    return root


def test_the_main_job_runs_on_a_folder_of_review_files(tmp_path, tiny_dir, capsys):
    root = write_review_folder(tmp_path / "reviews")
    out = tmp_path / "report"
    code = cli.main(["run", "--reviews", str(root), "--source", "dvd", "--target", "toys", "--model", tiny_dir,
                     "--student", "", "--source-only", *SMALL, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert list(results["transfer_matrix"]) == ["dvd"] and sorted(results["domains"]) == ["dvd", "toys"]
    assert {e["label"] for e in results["model"]["examples"]} <= {"negative", "positive"}
    assert "# xdlearn report: dvd -> toys" in (out / "report.md").read_text()


def latin1_shops_csv(path: Path, rows: int = 20) -> tuple[Path, int]:
    """The shops CSV in Latin-1, its first text starting with 'caf\u00e9 ': the file and the offset of that byte 0xe9."""
    lines = write_shops_csv(path, rows).read_text().splitlines(keepends=True)
    lines[1] = "caf\u00e9 " + lines[1]
    path.write_bytes("".join(lines).encode("latin-1"))
    return path, len(lines[0]) + 3


def with_label(path: Path, row: int, label: str) -> Path:
    """The shops CSV with data row ``row`` (1-based) given the label ``label``."""
    lines = path.read_text().splitlines(keepends=True)
    body, _, shop = lines[row].rsplit(",", 2)
    lines[row] = f"{body},{label},{shop}"
    path.write_text("".join(lines))
    return path


def own_data_errors(tmp_path: Path) -> dict:
    """Bad own-data invocations: (extra arguments, what the message must say)."""
    csv = write_shops_csv(tmp_path / "shops.csv", rows=20)
    latin1, offset = latin1_shops_csv(tmp_path / "latin1.csv")
    columns = ["--text-column", "body", "--label-column", "stars", "--domain-column", "shop", "--source", "books",
               "--target", "kitchen", "--test-size", "4", "--validation-size", "4"]
    return {
        "a Latin-1 file without --encoding": (["--data", str(latin1), *columns],
                                              (rf"latin1.csv: byte 0xe9 at offset {offset} \(line 2\) is not valid UTF-8; "
                                               r".*--encoding latin-1")),
        "a label outside --labels": (["--data", str(with_label(write_shops_csv(tmp_path / "meh.csv", rows=20), 3, "meh")),
                                      *columns, "--labels", "neg,pos"],
                                     r"meh.csv, column 'stars', row 3: label 'meh' is not one of \['neg', 'pos'\]"),
        "a misspelt column": (["--data", str(csv), "--text-column", "bdy", "--label-column", "stars"],
                              r"shops.csv: missing column\(s\) \['bdy'\]"),
        "a source the data lacks": (["--data", str(csv), "--text-column", "body", "--label-column", "stars",
                                     "--domain-column", "shop", "--source", "garden", "--target", "books"],
                                    r"source='garden' is not a domain of .*shops.csv; it has \['books', 'kitchen'\]"),
        "one file without a domain column": (["--data", str(csv), "--text-column", "body", "--label-column", "stars",
                             "--source", "shops", "--target", "books"], r"target='books' is not a domain"),
        "files and reviews": (["--data", str(csv), "--reviews", str(tmp_path)], "not both"),
        "a missing review folder": (["--reviews", str(tmp_path / "nowhere"), "--source", "a", "--target", "b"],
                                    r"nowhere: not a directory"),
        "a domain too small": (["--data", str(csv), "--text-column", "body", "--label-column", "stars",
                                "--domain-column", "shop", "--source", "books", "--target", "kitchen",
                                "--test-size", "15", "--validation-size", "5"],
                               r"domain 'books' \(20 rows\): .*leave no training rows"),
    }


@pytest.mark.parametrize("case", ["a misspelt column", "a source the data lacks", "one file without a domain column",
                                  "files and reviews", "a missing review folder", "a domain too small",
                                  "a Latin-1 file without --encoding", "a label outside --labels"])
def test_bad_own_data_stops_before_anything_is_written(tmp_path, capsys, case):
    arguments, message = own_data_errors(tmp_path)[case]
    out = tmp_path / "out"
    assert cli.main(["run", *arguments, "--out", str(out)]) == 2
    import re
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()  # bad data stops the run before its folder is made


def test_encoding_and_labels_options_reach_the_reader(tmp_path, tiny_dir, monkeypatch):
    seen = {}

    def record(cfg, splits, out, started, results):  # stands in for the training stages: only loading is tested
        seen.update(splits=splits)
        results["stage"] = "done"
    monkeypatch.setattr(job, "_run_stages", record)
    latin1, _ = latin1_shops_csv(tmp_path / "latin1.csv")
    assert cli.main(["run", "--data", str(latin1), "--encoding", "latin-1", "--labels", "pos,neg", "--model", tiny_dir,
                     "--text-column", "body", "--label-column", "stars", "--domain-column", "shop", "--source", "books",
                     "--target", "kitchen", "--test-size", "4", "--validation-size", "4", "--no-progress",
                     "--out", str(tmp_path / "out")]) == 0
    stars = dict(line.rsplit(",", 2)[:2] for line in latin1.read_text("latin-1").splitlines()[1:])  # body: stars
    loaded = [(text, job.class_names(part)[label]) for domain in seen["splits"].values() for part in domain.values()
              for text, label in zip(part["text"], part["label"])]
    assert job.class_names(seen["splits"]["books"]["train"]) == ["pos", "neg"]  # --labels order: pos is id 0
    assert any(text.startswith("caf\u00e9 ") for text, _ in loaded) and len(loaded) == 40
    assert all(stars[text] == label for text, label in loaded)


def test_a_run_that_diverges_exits_2_and_keeps_what_it_measured(tmp_path, tiny_dir, monkeypatch, capsys):
    from test_robustness import BreaksAt
    from xdlearn import checkpoint, train

    def diverging(model, data, objective=None, **settings):  # the target fine-tuning's loss turns NaN at step 2
        return train.fit(model, data, BreaksAt(2, "loss"), **settings)
    monkeypatch.setattr(job, "fit", diverging)
    out = tmp_path / "out"
    assert cli.main(["run", "--data", str(write_shops_csv(tmp_path / "shops.csv", rows=40)), "--model", tiny_dir,
                     *RUN, "--source-only", "--student", "", "--adapt", "none", "--out", str(out)]) == 2
    assert "xdlearn: error: training diverged at step 2 (epoch 2)" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["failed"]["stage"] == "fine-tuning for the target"
    assert results["failed"]["error"].startswith("TrainingDiverged: training diverged at step 2 (epoch 2)")
    assert 0 <= results["transfer_matrix"]["books"]["kitchen"] <= 1  # measured before the failure, kept
    assert "target" not in results and not (out / "model").exists()  # nothing trained into NaN was saved or served
    assert checkpoint.load(out / job.STATE / "fit-target")[0] == 0  # epoch 1's (finite) checkpoint, not the bad step


def test_a_late_failure_keeps_the_report_and_every_number_measured(tmp_path, tiny_dir, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the student could not be built")
    monkeypatch.setattr(job, "distill_to_student", broken)
    cfg = job.JobConfig(data=[str(write_shops_csv(tmp_path / "shops.csv"))], text_column="body",
                        label_column="stars", domain_column="shop", source="books", target="kitchen",
                        model=tiny_dir, train_size=48, budget=16, epochs=1, target_epochs=1, test_size=12,
                        validation_size=8, batch_size=16, matrix=False, progress=False)
    with pytest.raises(RuntimeError, match="could not be built"):
        job.run_main_job(cfg, tmp_path / "out")
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["failed"] == {"stage": "distillation (2-layer student)",
                                 "error": "RuntimeError: the student could not be built"}
    assert 0 <= results["target"]["source_then_target"] <= 1 and "books" in results["transfer_matrix"]
    assert "# xdlearn report: books -> kitchen" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "model" / "config.json").exists()


def test_output_folders_are_used_when_empty_and_never_shared(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert job.new_output_dir(empty) == empty.resolve()
    taken = [job.new_output_dir(empty) for _ in range(3)]  # the same second: three different folders
    assert len(set(taken)) == 3 and all(p.parent == empty.resolve() for p in taken)
    assert job.new_output_dir(tmp_path / "new" / "deep") == (tmp_path / "new" / "deep").resolve()


ROUNDS = 50   # a check-then-mkdir race shows in about 1 round in 17 here; 50 rounds catch it nearly always (0.6 s)


def test_runs_started_at_the_same_moment_get_different_folders(tmp_path, monkeypatch):
    """Threads released at once by a barrier pick their folders together, as runs started together without --out."""
    monkeypatch.chdir(tmp_path)  # without --out a run writes under ./xdlearn-output
    picked, errors = [], []

    def pick(start: threading.Barrier) -> None:
        start.wait()
        try:
            picked.append(job.new_output_dir(None))
        except Exception as err:  # reported below, not lost in the thread
            errors.append(err)
    for _ in range(ROUNDS):  # the first round races for the empty folder itself, the others for run-<time> folders
        start = threading.Barrier(8)
        threads = [threading.Thread(target=pick, args=(start,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors and len(picked) == len(set(picked)) == 8 * ROUNDS
    base = (tmp_path / "xdlearn-output").resolve()
    assert picked.count(base) == 1 and all(p == base or p.parent == base for p in picked)
    assert all((p / job.RUN_MARKER).is_file() for p in picked)


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_killed_run_resumes_to_the_same_numbers(csv_run, tmp_path, capsys, point):
    args, whole = csv_run
    out = tmp_path / "killed"
    code, printed = command(*args, "--out", str(out), kill_when=lambda text: KILL_POINTS[point](out, text))
    assert code == -9, printed[-3000:]  # SIGKILL: killed, not finished
    assert json.loads((out / "results.json").read_text())["stage"] != "done"
    if point == "mid-way through DANN":  # killed in its second epoch: the resume continues DANN's target stream
        assert json.loads((out / job.STATE / "fit-dann" / "checkpoint.json").read_text())["epoch"] == 0
    assert cli.main(["run", "--resume", str(out)]) == 0
    assert f"resuming the run in {out.resolve()}" in capsys.readouterr().out
    resumed = json.loads((out / "results.json").read_text())
    assert comparable(resumed) == comparable(json.loads((whole / "results.json").read_text()))
    assert resumed["stage"] == "done" and not (out / job.STATE).exists()
    assert (out / "report.md").exists() and (out / "student" / "config.json").exists()
    assert cli.main(["run", "--resume", str(out)]) == 2
    assert "already finished" in capsys.readouterr().err


def test_the_same_seed_gives_the_same_results(csv_run, tmp_path):
    """A second run of the same settings and seed agrees with the first on every number in results.json.

    Left out (``resume.TIMING``): wall_seconds, peak_memory_mb, examples_per_second and speedup measure the machine
    at that moment, and path / encoder_path name each run's own output folder; nothing else may differ.
    """
    args, first = csv_run
    assert cli.main([*args, "--out", str(tmp_path / "again")]) == 0
    one, two = (json.loads((folder / "results.json").read_text()) for folder in (first, tmp_path / "again"))
    assert comparable(two) == comparable(one)
    assert one["model"]["path"] != two["model"]["path"]  # the paths left out do differ, as said
    measured = (one["adaptation"]["train_loss"], one["distillation"]["ece"]["student"], one["model"]["examples"][0]["score"])
    assert all(0 < x < 10 for x in measured)  # continuous numbers, not only accuracies of 12 sentences, are compared
