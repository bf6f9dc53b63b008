"""Labels, splits, your own files, the Amazon review layout, and batches with dynamic padding."""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from datasets import Dataset

from xdlearn import data
from conftest import toy_sentences


@pytest.mark.parametrize("rating, binary, three", [
    (2.0, 1, 2), (-0.5, 0, 0), (0.5, 1, 2), (0.49, None, 1), (-0.2, None, 1), (-3.9, 0, 0)])
def test_rating_to_label(rating, binary, three):
    assert data.rating_to_label(rating, 2) == binary
    assert data.rating_to_label(rating, 3) == three


def test_splits_are_deterministic_disjoint_and_complete():
    ds = toy_sentences(200)
    a, b, c = data.split(ds, seed=3), data.split(ds, seed=3), data.split(ds, seed=4)
    assert list(a["test"]["text"]) == list(b["test"]["text"])
    assert list(a["test"]["text"]) != list(c["test"]["text"])
    assert (len(a["test"]), len(a["validation"]), len(a["train"])) == (40, 20, 140)
    ids = [i for part in a.values() for i in part._indices.column(0).to_pylist()]
    assert sorted(ids) == list(range(200))
    sized = data.split(ds, seed=0, test_size=50, validation_size=10)
    assert (len(sized["test"]), len(sized["validation"])) == (50, 10)
    with pytest.raises(data.DataError, match="leave no training rows"):
        data.split(ds, test_size=150, validation_size=50)


def test_sample_labels_is_balanced_and_reproducible():
    ds = toy_sentences(100)
    picked = data.sample_labels(ds, 16, seed=1)
    assert Counter(picked["label"]) == {0: 8, 1: 8}
    assert list(picked["text"]) == list(data.sample_labels(ds, 16, seed=1)["text"])
    assert len(data.sample_labels(ds, 1000)) == 100
    assert data.unlabeled(picked).column_names == ["text", "domain"]


# ---- your own files -------------------------------------------------------------------------
def test_load_table_reads_csv_tsv_json_jsonl_parquet(tmp_path):
    import pandas as pd
    frame = pd.DataFrame({"review": ["great, really", "awful"], "stars": ["pos", "neg"],
                          "shop": ["a", "b"]})
    frame.to_csv(tmp_path / "r.csv", index=False)
    frame.to_csv(tmp_path / "r.tsv", sep="\t", index=False)
    frame.to_json(tmp_path / "r.json", orient="records")
    frame.to_json(tmp_path / "r.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "r.parquet")
    for name in ("r.csv", "r.tsv", "r.json", "r.jsonl", "r.parquet"):
        ds = data.load_table(tmp_path / name, "review", "stars", domain_column="shop",
                             labels=["neg", "pos"])
        assert list(ds["text"]) == ["great, really", "awful"], name
        assert list(ds["label"]) == [1, 0] and list(ds["domain"]) == ["a", "b"], name
    inferred = data.load_table(tmp_path / "r.csv", "review", "stars")
    assert inferred.features["label"].names == ["neg", "pos"]
    assert list(inferred["domain"]) == ["r", "r"]


def test_malformed_csv_names_the_file(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('text,label\n"fine",1\n"too","many","fields"\n')
    with pytest.raises(data.DataError, match="broken.csv: cannot be read as CSV"):
        data.load_table(path)


def test_missing_column_names_the_column_and_what_exists(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text("sentence,label\nhello,1\n")
    with pytest.raises(data.DataError, match=r"missing column\(s\) \['text'\]; the file has \['sentence', 'label'\]"):
        data.load_table(path)


def test_unknown_label_names_the_value_and_row(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("text,label\nok,positive\nhm,maybe\n")
    with pytest.raises(data.DataError, match=r"labels.csv, column 'label', row 2: label 'maybe'"):
        data.load_table(path, labels=["negative", "positive"])


def test_empty_text_and_missing_file_are_reported(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\nok,1\n,0\n")
    with pytest.raises(data.DataError, match=r"empty in row\(s\) \[2\]"):
        data.load_table(path)
    with pytest.raises(data.DataError, match="nope.csv: no such file"):
        data.load_table(tmp_path / "nope.csv")
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(data.DataError, match="unknown format"):
        data.load_table(tmp_path / "x.xlsx")


def test_hub_loader_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(data.DataError, match="load_corpus"):
        data.load_hub("someone/not-cached-dataset-xyz")


# ---- the Amazon multi-domain review layout --------------------------------------------------
REVIEWS = {
    "positive": b"""<review>
<unique_id>
B000:great_book
</unique_id>
<rating>
5.0
</rating>
<title>
Loved it & more
</title>
<review_text>
A wonderful read, Q&A included &amp; an index.
Second line of the review.
</review_text>
</review>
<review>
<rating>
4.0
</rating>
<review_text>
Caf\xe9 owners will like it
</review_text>
</review>
""",
    "negative": b"""<review>
<rating>
1.0
</rating>
<title>
Dull
</title>
<review_text>
Boring <and> too long
</review_text>
</review>
""",
}


def write_reviews(root, domain="books"):
    folder = root / domain
    folder.mkdir(parents=True)
    for name, body in REVIEWS.items():
        (folder / f"{name}.review").write_bytes(body)
    return root


def test_amazon_reviews_layout_with_its_quirks(tmp_path):
    root = write_reviews(tmp_path, "books")
    write_reviews(tmp_path, "dvd")
    ds = data.load_amazon_reviews(root)
    assert sorted(ds) == ["books", "dvd"]
    books = ds["books"]
    assert list(books["text"]) == ["Boring <and> too long",
                                   "A wonderful read, Q&A included & an index. Second line of the review.",
                                   "Caf\u00e9 owners will like it"]
    assert list(books["label"]) == [0, 1, 1]
    titled = data.load_amazon_reviews(root, ["books"], include_title=True)["books"]
    assert titled["text"][1].startswith("Loved it & more. A wonderful read")


def test_amazon_reviews_errors_name_the_file(tmp_path):
    (tmp_path / "kitchen").mkdir()
    (tmp_path / "kitchen" / "positive.review").write_text("not a review file at all")
    (tmp_path / "kitchen" / "negative.review").write_text("")
    with pytest.raises(data.DataError, match=r"kitchen/negative.review: the file is empty"):
        data.load_amazon_reviews(tmp_path)  # an empty class is an error, not a domain of positives only
    (tmp_path / "kitchen" / "negative.review").write_bytes(REVIEWS["negative"])
    with pytest.raises(data.DataError, match=r"positive.review: no <review>"):
        data.load_amazon_reviews(tmp_path)
    with pytest.raises(data.DataError, match=r"electronics/negative.review: missing"):
        data.load_amazon_reviews(tmp_path, ["electronics"])


# ---- batches -----------------------------------------------------------------------------
def test_length_grouped_batches_cover_every_row_once_and_repeat_per_epoch():
    lengths = [((i * 37) % 50) + 1 for i in range(500)]
    sampler = data.LengthGroupedBatchSampler(lengths, batch_size=16, seed=0, chunk_batches=8)
    first = sampler.batches()
    assert sorted(i for b in first for i in b) == list(range(500))
    assert len(first) == len(sampler) == 32
    assert first == data.LengthGroupedBatchSampler(lengths, 16, seed=0, chunk_batches=8).batches()
    sampler.set_epoch(1)
    assert sampler.batches() != first
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in first) / len(first)
    assert spread < 10  # random batches of these lengths spread over ~45


def test_collator_pads_to_the_longest_row_and_carries_labels(tokenizer):
    rows = [dict(tokenizer("short"), label=1), dict(tokenizer("a much longer sentence here"), label=0)]
    batch = data.PadCollator(tokenizer.pad_token_id)(rows)
    width = len(rows[1]["input_ids"])
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"][0].tolist() == [1] * len(rows[0]["input_ids"]) + [0] * (width - 3)
    assert batch["input_ids"][0, -1].item() == tokenizer.pad_token_id
    assert batch["labels"].tolist() == [1, 0]


def test_loader_pads_less_with_length_grouping(tokenizer):
    ds = toy_sentences(512)
    def padding_fraction(loader):
        masks = [b["attention_mask"] for b in loader]
        return 1 - sum(m.sum().item() for m in masks) / sum(m.numel() for m in masks)
    grouped = padding_fraction(data.make_loader(ds, tokenizer, batch_size=32))
    plain = padding_fraction(data.make_loader(ds, tokenizer, batch_size=32, group_by_length=False))
    assert grouped < plain / 3
    with pytest.raises(data.DataError, match="pass tokenizer="):
        data.make_loader(ds)


def test_split_keeps_near_duplicates_together():
    base = [f"sentence number {i} is here" for i in range(80)]
    texts = base + [t.upper() + "!!!" for t in base[:30]]  # 30 variants of earlier sentences
    ds = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    parts = data.split(ds, seed=1, test_size=20, validation_size=10)
    assert [len(parts[k]) for k in ("test", "validation", "train")] == [20, 10, 80]
    keys = {k: {data.duplicate_key(t) for t in parts[k]["text"]} for k in parts}
    assert not keys["test"] & keys["train"] and not keys["validation"] & keys["train"]
    assert not keys["test"] & keys["validation"]
    loose = data.split(ds, seed=1, test_size=20, validation_size=10, group_duplicates=False)
    loose_keys = {k: {data.duplicate_key(t) for t in loose[k]["text"]} for k in loose}
    assert loose_keys["test"] & loose_keys["train"]  # without grouping, copies leak across splits


def test_iterating_a_loader_leaves_the_global_rng_alone(tokenizer):
    ds = Dataset.from_dict({"text": ["a b c", "d e", "f"] * 8, "label": [0, 1, 0] * 8})
    for grouped in (True, False):
        loader = data.make_loader(ds, tokenizer, batch_size=4, group_by_length=grouped)
        before = torch.get_rng_state()
        batches = list(loader)
        assert len(batches) == 6 and torch.equal(torch.get_rng_state(), before)
