"""Bad input, damaged files, divergence: each gets a clear error naming the culprit, never a silent wrong result."""
from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import pytest
import torch

from xdlearn import checkpoint, objectives, train
from conftest import Interrupt, StopAfterFirstEpoch, make_tiny_model, toy_sentences
from test_own_data_job import SMALL, write_shops_csv


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
                                            ("epochs", 0), ("batch_size", 0), ("weight_decay", -0.1),
                                            ("max_length", 1), ("max_grad_norm", -1.0), ("max_grad_norm", float("nan"))])
def test_fit_refuses_impossible_settings_before_any_work(tiny_model, setting, value):
    with pytest.raises(ValueError, match=rf"{setting}={value!r}: must be"):
        train.fit(tiny_model, toy_sentences(8), progress=False, **{setting: value})


BAD_JOB_SETTINGS = [  # (option, bad value, the error the command prints)
    ("train_size", "0", "train_size must be at least 1, got 0"), ("epochs", "0", "epochs must be at least 1, got 0"),
    ("target_epochs", "-2", "target_epochs must be at least 1, got -2"),
    ("test_size", "0", "test_size must be at least 1, got 0"), ("batch_size", "0", "batch_size must be at least 1, got 0"),
    ("transfer_size", "0", "transfer_size must be at least 1, got 0"),
    ("distill_epochs", "0", "distill_epochs must be at least 1, got 0"),
    ("adapt_epochs", "0", "adapt_epochs must be at least 1, got 0"), ("seed", "-1", "seed must be at least 0, got -1"),
    ("budget", "0", "budget must be at least 1, got 0"), ("validation_size", "0", "validation_size must be at least 1, got 0"),
    ("max_tokens", "0", "max_tokens must be at least 1, got 0"), ("lr", "nan", "lr must be a finite number above 0, got nan"),
    ("temperature", "-1", "temperature must be a finite number above 0, got -1.0"),
]


@pytest.mark.parametrize("command", ["run", "distill"])
@pytest.mark.parametrize("setting, value, message", BAD_JOB_SETTINGS)
def test_a_bad_job_setting_is_refused_naming_it_before_any_folder(tmp_path, tiny_dir, capsys, command, setting,
                                                                   value, message):
    from xdlearn import cli
    out = tmp_path / "out"
    good = ["--data", str(write_shops_csv(tmp_path / "shops.csv", rows=40)), "--text-column", "body",
            "--label-column", "stars", "--domain-column", "shop", "--source", "books", "--target", "kitchen",
            "--model", tiny_dir, "--student", "cnn", *SMALL, *(["--source-only"] if command == "run" else [])]
    assert cli.main([command, *good, f"--{setting.replace('_', '-')}", value, "--out", str(out)]) == 2
    assert f"xdlearn: error: {message}" in capsys.readouterr().err
    assert not out.exists()  # refused before the output folder was made


# ---- checkpoints ------------------------------------------------------------------------------------------
SETTINGS = dict(epochs=2, batch_size=16, lr=1e-3, progress=False)


@pytest.fixture
def saved_run(tokenizer, tmp_path):
    """A run stopped after its first epoch, its checkpoint in tmp_path / 'ckpt'."""
    with pytest.raises(Interrupt):
        train.fit(make_tiny_model(), toy_sentences(64), tokenizer=tokenizer, checkpoint_dir=tmp_path / "ckpt",
                  monitor=StopAfterFirstEpoch(), **SETTINGS)
    return tmp_path / "ckpt"


def tensor_file(directory: Path) -> Path:
    return directory / json.loads((directory / checkpoint.INDEX).read_text())["tensors"]


def flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def fill_with_nan(path: Path) -> None:
    """Re-save a safetensors file with every floating-point value NaN: it loads whole, but no number is usable."""
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(path))
    tensors = {k: torch.full_like(t, float("nan")) if t.is_floating_point() else t for k, t in tensors.items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def with_nan_weights(path: Path) -> None:
    """Re-save the tensors with NaN weights and a matching hash: only the values are wrong."""
    fill_with_nan(path)
    index_path = path.parent / checkpoint.INDEX
    index = json.loads(index_path.read_text())
    index["sha256"] = checkpoint.sha256_of(path)
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


# ---- your own tables --------------------------------------------------------------------------------------
def write_parquet(path: Path, columns: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table(columns), path)


def writer(name: str, content):
    """A function writing ``content`` (bytes, JSON-able data, or Parquet columns) to ``tmp_path / name``."""
    def write(tmp_path: Path) -> Path:
        path = tmp_path / name
        if name.endswith(".parquet"):
            write_parquet(path, content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(json.dumps(content))
        return path
    return write


BAD_TABLES = {  # case: (file, load_table options, what the message must say)
    "null text in JSON": (writer("t.json", [{"text": "fine", "label": "positive"}, {"text": None, "label": "negative"}]),
                          {}, r"t.json: column 'text' is missing \(null\) in row\(s\) \[2\]"),
    "null text in JSON lines": (writer("t.jsonl", b'{"text": "ok", "label": 1}\n{"label": 0}\n'),
                                {}, r"t.jsonl: column 'text' is missing \(null\) in row\(s\) \[2\]"),
    "null text in Parquet": (writer("t.parquet", {"text": ["ok", None], "label": ["positive", "negative"]}),
                             {}, r"t.parquet: column 'text' is missing \(null\) in row\(s\) \[2\]"),
    "a number as text in JSON": (writer("n.json", [{"text": 5, "label": "positive"}]),
                                 {}, r"n.json: column 'text', row 1: 5 is a int, not text"),
    "numbers as text in Parquet": (writer("n.parquet", {"text": [1.5, 2.0], "label": [0, 1]}),
                                   {}, r"n.parquet: column 'text', row 1: 1.5 is a float, not text"),
    "empty text in CSV": (writer("e.csv", b"text,label\nok,1\n  ,0\n"), {}, r"e.csv: column 'text' is empty in row\(s\) \[2\]"),
    "a header without rows": (writer("h.csv", b"text,label\n"), {}, r"h.csv: no rows, only a header \(\['text', 'label'\]"),
    "an empty CSV file": (writer("z.csv", b""), {}, r"z.csv: the file is empty"),
    "an empty JSON array": (writer("z.json", []), {}, r"z.json: no rows and no columns"),
    "a header-only Parquet file": (writer("h.parquet", {"text": [], "label": []}), {}, r"h.parquet: no rows, only a header"),
    "a row with an extra field": (writer("x.csv", b"text,label\nok,1\nbad,0,surprise\n"), {},
                                  r"x.csv: cannot be read as CSV: row 2 has 3 fields, the header has 2"),
    "a label outside labels=": (writer("l.csv", b"text,label\nok,positive\nhm,maybe\n"),
                                {"labels": ["negative", "positive"]}, r"l.csv, column 'label', row 2: label 'maybe'"),
    "a null label": (writer("l.json", [{"text": "ok", "label": "positive"}, {"text": "hm", "label": None}]),
                     {}, r"l.json, column 'label': label is missing \(null\) in row\(s\) \[2\]"),
    "a null domain": (writer("d.json", [{"text": "ok", "label": 1, "shop": None}]), {"domain_column": "shop"},
                      r"d.json: column 'shop' is missing \(null\) in row\(s\) \[1\]"),
    "a JSON object that is not columns": (writer("o.json", {"text": "just one", "label": 1}), {},
                                          r"o.json: a JSON object must map each column to a list"),
    "JSON columns of different lengths": (writer("c.json", {"text": ["a", "b"], "label": [1]}), {},
                                          r"c.json: the JSON columns have different lengths"),
    "a non-UTF-8 byte": (writer("u.csv", "text,label\ncaf\u00e9 au lait,1\n".encode("latin-1")), {},
                         r"u.csv: byte 0xe9 at offset 14 \(line 2\) is not valid UTF-8; pass encoding="),
    "a wrong encoding= name": (writer("w.csv", b"text,label\nok,1\n"), {"encoding": "no-such-codec"},
                               r"w.csv: unknown encoding 'no-such-codec'"),
    "null (empty) text in TSV": (writer("t.tsv", b"text\tlabel\nok\t1\n\t0\n"), {},
                                 r"t.tsv: column 'text' is empty in row\(s\) \[2\]"),
    "a number as text in JSON lines": (writer("n.jsonl", b'{"text": "ok", "label": 1}\n{"text": 7, "label": 0}\n'),
                                       {}, r"n.jsonl: column 'text', row 2: 7 is a int, not text"),
    "a list as text in JSON lines": (writer("n.jsonl", b'{"text": ["a", "b"], "label": 1}\n'),
                                     {}, r"n.jsonl: column 'text', row 1: \['a', 'b'\] is a list, not text"),
    "an empty JSON object": (writer("o.json", {}), {}, r"o.json: no rows and no columns"),
    "an empty JSON lines file": (writer("z.jsonl", b""), {}, r"z.jsonl: the file is empty"),
    "a JSON lines file of blank lines": (writer("b.jsonl", b"\n  \n\n"), {}, r"b.jsonl: no rows and no columns"),
}


@pytest.mark.parametrize("case", list(BAD_TABLES))
def test_a_bad_table_gets_an_error_naming_the_culprit(tmp_path, case):
    from xdlearn import data
    write, options, message = BAD_TABLES[case]
    path = write(tmp_path)
    with pytest.raises(data.DataError, match=message):
        data.load_table(path, **options)


def test_a_trailing_comma_on_every_row_keeps_text_and_labels_in_place(tmp_path):
    from xdlearn import data
    path = tmp_path / "trailing.csv"
    path.write_text("text,label\nwhat a great film,positive,\na dull mess,negative,\n")
    ds = data.load_table(path, labels=["negative", "positive"])
    assert list(ds["text"]) == ["what a great film", "a dull mess"] and list(ds["label"]) == [1, 0]


def test_a_json_object_of_columns_and_an_explicit_encoding_load(tmp_path):
    from xdlearn import data
    (tmp_path / "cols.json").write_text(json.dumps({"text": ["good", "bad"], "label": ["positive", "negative"]}))
    ds = data.load_table(tmp_path / "cols.json", labels=data.BINARY)
    assert list(ds["text"]) == ["good", "bad"] and list(ds["label"]) == [1, 0]
    (tmp_path / "l1.csv").write_bytes("text,label\ncaf\u00e9 au lait,1\n".encode("latin-1"))
    assert data.load_table(tmp_path / "l1.csv", encoding="latin-1")["text"] == ["caf\u00e9 au lait"]


def test_without_labels_a_rare_class_is_reported_as_a_possible_typo(tmp_path):
    from xdlearn import data
    rows = [{"text": f"sentence {i}", "label": "positive" if i % 2 else "negative"} for i in range(40)]
    rows[7]["label"] = "postive"
    (tmp_path / "typo.json").write_text(json.dumps(rows))
    with pytest.warns(UserWarning, match=r"typo.json, column 'label': label\(s\) \['postive'\] are rare"):
        ds = data.load_table(tmp_path / "typo.json")
    assert ds.features["label"].names == ["negative", "positive", "postive"]


# ---- the review layout ------------------------------------------------------------------------------------
GOOD = b"<review>\n<review_text>\nA fine kettle\n</review_text>\n</review>\n"


def review_tree(tmp_path: Path, files: dict[str, bytes]) -> Path:
    root = tmp_path / "reviews"
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if body is not None:
            (root / name).write_bytes(body)
    return root


BAD_REVIEWS = {
    "a domain without positive.review": ({"books/positive.review": GOOD, "books/negative.review": GOOD,
                                          "dvd/negative.review": GOOD}, r"dvd/positive.review: missing"),
    "an empty domain folder": ({"books/positive.review": GOOD, "books/negative.review": GOOD, "toys/x": None},
                               r"toys/negative.review: missing"),
    "an empty review file": ({"books/positive.review": GOOD, "books/negative.review": b""},
                             r"books/negative.review: the file is empty"),
    "no domain folders": ({"notes.txt": b"hello"}, r"reviews: no domain folders"),
}


@pytest.mark.parametrize("case", list(BAD_REVIEWS))
def test_a_bad_review_layout_gets_an_error_naming_the_file(tmp_path, case):
    from xdlearn import data
    files, message = BAD_REVIEWS[case]
    with pytest.raises(data.DataError, match=message):
        data.load_amazon_reviews(review_tree(tmp_path, files))


def test_reviews_are_decoded_one_by_one(tmp_path):
    from xdlearn import data
    utf8 = "<review><review_text>a na\u00efve \u201cclassic\u201d</review_text></review>\n".encode("utf-8")
    latin = "<review><review_text>caf\u00e9 quality</review_text></review>\n".encode("latin-1")
    path = tmp_path / "positive.review"
    path.write_bytes(utf8 + latin)
    assert data.parse_review_file(path) == ["a na\u00efve \u201cclassic\u201d", "caf\u00e9 quality"]
    with pytest.raises(data.DataError, match=r"positive.review: byte 0xe9 at offset \d+ \(line 2\) is not valid utf-8"):
        data.parse_review_file(path, encoding="utf-8")
    assert data.parse_review_file(tmp_path / "positive.review", encoding="latin-1")[1] == "caf\u00e9 quality"


# ---- the cached corpus ------------------------------------------------------------------------------------
def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-5])


def alter(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + (b"X" if raw[-1:] != b"X" else b"Y"))   # same size, one byte different


CACHE_DAMAGE = {"truncated": (truncate, r"bytes, the verified download had"),
                "emptied": (lambda p: p.write_bytes(b""), r": 0 bytes, the verified download had"),
                "altered": (alter, r"altered \(its sha256 differs"),
                "deleted": (Path.unlink, r"GroundTruth.txt: missing"),
                "manifest lost": (lambda p: (p.parent / "manifest.json").unlink(), "not the published ones")}


@pytest.fixture
def cached_corpus(tmp_path, monkeypatch):
    """A verified cache of a small archive laid out like the real one; the movies file to damage."""
    from test_corpus import fake_sdist
    from xdlearn import corpus
    sdist = fake_sdist(tmp_path / "fake.tar.gz")
    monkeypatch.setenv("XDLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDLEARN_VADER_SDIST", str(sdist))
    monkeypatch.setattr(corpus, "SDIST_SHA256", corpus.sha256_of(sdist))
    return corpus.corpus_dir() / corpus.DOMAIN_FILES["movies"]


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
def test_a_damaged_cache_is_fetched_again(cached_corpus, capsys, damage):
    from xdlearn import data
    whole = cached_corpus.read_bytes()
    spoil, message = CACHE_DAMAGE[damage]
    spoil(cached_corpus)
    assert list(data.load_corpus(["movies"])["movies"]["text"]) == ["sentence 2", "another"]
    assert cached_corpus.read_bytes() == whole
    assert "the cached corpus was damaged" in capsys.readouterr().err


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
def test_a_damaged_cache_that_cannot_be_fetched_is_reported(cached_corpus, monkeypatch, damage):
    from xdlearn import corpus, data

    def offline(dest):
        raise corpus.CorpusError("Could not download vaderSentiment==3.3.2 with pip")
    monkeypatch.delenv("XDLEARN_VADER_SDIST")
    monkeypatch.setattr(corpus, "download_sdist", offline)
    spoil, message = CACHE_DAMAGE[damage]
    spoil(cached_corpus)
    with pytest.raises(corpus.CorpusError, match=rf"the cached corpus is damaged \(.*{message}.*could not be fetched"):
        data.load_corpus(["movies"])


# ---- damaged model files through the command ---------------------------------------------------------------
def test_a_damaged_model_file_is_a_clear_error_not_a_traceback(tmp_path, tokenizer, capsys):
    from xdlearn import cli, models, students
    teacher = tmp_path / "teacher"
    make_tiny_model().save_pretrained(teacher)
    tokenizer.save_pretrained(teacher)
    weights = teacher / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(models.ModelError, match=rf"{teacher}: its weights file is damaged"):
        models.load_pretrained(teacher)
    assert cli.main(["distill", "--teacher", str(teacher), "--target", "products", "--student", "bilstm",
                     "--test-size", "16", "--no-progress", "--out", str(tmp_path / "out")]) == 2
    assert f"xdlearn: error: {teacher}: its weights file is damaged" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before the output folder was made
    student = students.save(students.make_student(make_tiny_model(), tokenizer, "cnn"), tokenizer, tmp_path / "cnn")
    (student / students.WEIGHTS_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(models.ModelError, match=rf"{student}: its weights file is damaged"):
        students.load(student)


MODEL_DAMAGE = {  # how a saved model directory is spoiled: (spoil, what the error names, what it says)
    "a truncated weights file": (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:1000]),
                                 "", r"its weights file is damaged"),
    "no weights file": (lambda d: (d / "model.safetensors").unlink(), "", r"no weights file"),
    "NaN weights": (lambda d: fill_with_nan(d / "model.safetensors"), "model.safetensors", r"holds non-finite weights"),
    "a damaged config.json": (lambda d: (d / "config.json").write_text("{not json"), "config.json",
                              r"damaged or not a model's config"),
    "no tokenizer": (lambda d: [(d / n).unlink() for n in ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                                           "special_tokens_map.json") if (d / n).exists()],
                     "", r"its tokenizer has \d+ tokens for a model of 30522 token embeddings"),
}


@pytest.mark.parametrize("command", ["run --model", "distill --teacher"])
@pytest.mark.parametrize("damage", list(MODEL_DAMAGE))
def test_a_damaged_model_directory_is_refused_before_any_folder_or_training(tmp_path, tokenizer, capsys,
                                                                             command, damage):
    from xdlearn import cli
    model = tmp_path / "model"
    make_tiny_model().save_pretrained(model)
    tokenizer.save_pretrained(model)
    spoil, culprit, message = MODEL_DAMAGE[damage]
    spoil(model)
    name, option = command.split()
    out = tmp_path / "out"
    assert cli.main([name, option, str(model), "--source", "products", "--target", "tweets", "--student", "cnn",
                     "--no-progress", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert re.search(rf"xdlearn: error: {re.escape(str(model / culprit if culprit else model))}: {message}", error), error
    assert not out.exists()  # nothing made, nothing trained: the check comes first
