"""The default corpus: parsing its file quirks, hash verification, caching, and the real data."""
from __future__ import annotations

import concurrent.futures
import io
import tarfile
import time
from pathlib import Path

import pytest

from xdlearn import corpus, data


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_parse_handles_crlf_entities_blank_lines_and_missing_final_newline(tmp_path):
    raw = b"1\t2.5\tI love it &amp; more\r\n\r\n2_3\t-1.25\tNot \xc3\xa9pic at all\r\n3\t0.1\tmeh"
    rows = corpus.parse_ratings_file(write(tmp_path / "x.txt", raw))
    assert [r["id"] for r in rows] == ["1", "2_3", "3"]
    assert rows[0] == {"id": "1", "rating": 2.5, "text": "I love it & more"}
    assert rows[1]["text"] == "Not \u00e9pic at all" and rows[1]["rating"] == -1.25
    assert rows[2]["text"] == "meh"  # no trailing CR/LF left behind


def test_parse_names_file_and_line_of_a_bad_row(tmp_path):
    path = write(tmp_path / "bad.txt", b"1\t1.0\tfine\r\n2\tnot-a-number\toops\r\n")
    with pytest.raises(corpus.CorpusError, match=r"bad.txt:2: rating 'not-a-number'"):
        corpus.parse_ratings_file(path)
    path = write(tmp_path / "short.txt", b"1\t1.0\tfine\r\njust text\r\n")
    with pytest.raises(corpus.CorpusError, match=r"short.txt:2: expected ID<TAB>rating<TAB>text"):
        corpus.parse_ratings_file(path)


def fake_sdist(path: Path) -> Path:
    """An archive laid out like vaderSentiment-3.3.2.tar.gz, with tiny ground-truth files."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        for i, name in enumerate(corpus.DOMAIN_FILES.values()):
            body = f"1\t{i + 1}.0\tsentence {i}\r\n2\t-2.0\tanother".encode()
            info = tarfile.TarInfo(f"hutto_ICWSM_2014/{name}")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(corpus.INNER_ARCHIVE)
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))
    return path


def test_a_file_with_the_wrong_hash_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("XDLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDLEARN_VADER_SDIST", str(fake_sdist(tmp_path / "fake.tar.gz")))
    with pytest.raises(corpus.CorpusError, match="sha256"):
        corpus.corpus_dir()
    assert not (tmp_path / "cache" / "hutto2014").exists()


def test_extracts_once_then_reads_from_the_cache(tmp_path, monkeypatch):
    sdist = fake_sdist(tmp_path / "fake.tar.gz")
    monkeypatch.setenv("XDLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDLEARN_VADER_SDIST", str(sdist))
    monkeypatch.setattr(corpus, "SDIST_SHA256", corpus.sha256_of(sdist))
    root = corpus.corpus_dir()
    assert root == tmp_path / "cache" / "hutto2014"
    assert sorted(p.name for p in root.iterdir()) == sorted([*corpus.DOMAIN_FILES.values(), corpus.MANIFEST])
    sdist.unlink()  # a second call must not need the archive any more
    assert corpus.corpus_dir() == root
    ds = data.load_corpus(["movies"])["movies"]
    assert list(ds["text"]) == ["sentence 2", "another"] and list(ds["label"]) == [1, 0]


def test_the_real_corpus_matches_the_published_counts():
    """Downloads (once, then cached) and parses the real four domains."""
    binary = data.load_corpus()
    three = data.load_corpus(num_classes=3)
    expected = {"tweets": (1087, 768, 2345), "editorials": (1783, 2220, 1187),
                "movies": (5076, 533, 4996), "products": (1235, 723, 1750)}
    for domain, (neg, neutral, pos) in expected.items():
        assert len(binary[domain]) == neg + pos
        labels = list(three[domain]["label"])
        assert (labels.count(0), labels.count(1), labels.count(2)) == (neg, neutral, pos)
        assert set(binary[domain]["domain"]) == {domain}
    assert binary["movies"].features["label"].names == ["negative", "positive"]
    assert not any("&amp;" in t for t in binary["tweets"]["text"])


def test_two_processes_fetching_at_once_fetch_once_and_both_get_the_whole_folder(tmp_path):
    """Parallel tests or two open lessons on a fresh machine: the second waits for the first's fetch and uses it."""
    target, calls = tmp_path / "cache" / "thing", []

    def slow_fetch(folder: Path) -> None:
        calls.append(folder)
        with corpus.staged(folder) as staging:
            time.sleep(0.5)                      # long enough for the other caller to arrive meanwhile
            (staging / "file.txt").write_text("whole")

    def problem_of(folder: Path):
        return None if (folder / "file.txt").read_text() == "whole" else "truncated"

    with concurrent.futures.ThreadPoolExecutor(2) as pool:   # flock locks per open file: threads contend like processes
        results = list(pool.map(lambda _: corpus.cached(target, problem_of, slow_fetch, "thing"), range(2)))
    assert results == [target, target] and len(calls) == 1
    assert (target / "file.txt").read_text() == "whole"
