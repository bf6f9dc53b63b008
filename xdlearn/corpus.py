"""The default teaching corpus: Hutto & Gilbert's (2014) human-rated sentences in four domains.

The sentences ship inside the PyPI *source* distribution of ``vaderSentiment==3.3.2``. We fetch that
file once with pip (the only network this project may use), check its sha256, unpack the four
ground-truth files into a cache directory and parse them from there on every later call.
"""
from __future__ import annotations

import hashlib
import html
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
SDIST_REQUIREMENT = "vaderSentiment==3.3.2"
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"

#: domain name -> ground-truth file inside the inner archive
DOMAIN_FILES = {
    "tweets": "tweets_GroundTruth.txt",
    "editorials": "nytEditorialSnippets_GroundTruth.txt",
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "products": "amazonReviewSnippets_GroundTruth.txt",
}
DOMAINS = tuple(DOMAIN_FILES)


class CorpusError(RuntimeError):
    """The default corpus could not be fetched, verified or parsed."""


def cache_dir() -> Path:
    """Where downloads live: $XDLEARN_CACHE, else $XDG_CACHE_HOME/xdlearn, else ~/.cache/xdlearn."""
    if os.environ.get("XDLEARN_CACHE"):
        return Path(os.environ["XDLEARN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xdlearn"


def sha256_of(path: Path) -> str:
    """Hash a file in chunks, so a corrupt or substituted download is caught before we parse it."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_sdist(dest: Path) -> Path:
    """Fetch the vaderSentiment source distribution with pip (no dependencies, no wheel)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--quiet", SDIST_REQUIREMENT, "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    path = dest / SDIST_NAME
    if result.returncode != 0 or not path.exists():
        raise CorpusError(
            f"Could not download {SDIST_REQUIREMENT} with pip (exit {result.returncode}). "
            f"pip said:\n{result.stderr.strip()[-2000:]}\n"
            f"If this machine is offline, download {SDIST_NAME} elsewhere and set "
            f"XDLEARN_VADER_SDIST=/path/to/{SDIST_NAME}.")
    return path


def extract_domains(sdist: Path, target: Path) -> None:
    """Verify the sdist's hash and unpack the four ground-truth files into ``target`` atomically."""
    digest = sha256_of(sdist)
    if digest != SDIST_SHA256:
        raise CorpusError(f"{sdist}: sha256 is {digest}, expected {SDIST_SHA256}; "
                          "the file is corrupt or not the published vaderSentiment 3.3.2.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        with tarfile.open(sdist) as outer:
            inner_bytes = outer.extractfile(INNER_ARCHIVE).read()
        with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
            for member in inner.getmembers():
                name = Path(member.name).name
                if name in DOMAIN_FILES.values():
                    (staging / name).write_bytes(inner.extractfile(member).read())
        missing = [f for f in DOMAIN_FILES.values() if not (staging / f).exists()]
        if missing:
            raise CorpusError(f"{sdist}: inner archive lacks {missing}")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)  # atomic: a half-written cache is never visible
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def corpus_dir(refresh: bool = False) -> Path:
    """Return the directory holding the four ground-truth files, fetching them on first use."""
    target = cache_dir() / "hutto2014"
    if not refresh and all((target / f).exists() for f in DOMAIN_FILES.values()):
        return target
    local = os.environ.get("XDLEARN_VADER_SDIST")
    if local:
        extract_domains(Path(local).expanduser(), target)
        return target
    with tempfile.TemporaryDirectory() as tmp:
        extract_domains(download_sdist(Path(tmp)), target)
    return target


def parse_ratings_file(path: str | Path) -> list[dict]:
    """Parse ``ID<TAB>mean_rating<TAB>text`` lines (CRLF, HTML entities), naming the line at fault."""
    path = Path(path)
    rows = []
    text = path.read_bytes().decode("utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise CorpusError(f"{path}:{lineno}: expected ID<TAB>rating<TAB>text, got {line[:80]!r}")
        ident, rating, sentence = parts
        try:
            value = float(rating)
        except ValueError:
            raise CorpusError(f"{path}:{lineno}: rating {rating!r} is not a number") from None
        rows.append({"id": ident.strip(), "rating": value, "text": html.unescape(sentence.strip())})
    return rows
