"""Where the main job's domains come from: the built-in corpus, your table files, or a folder of review files.

Every source gives ``{domain: Dataset}`` in the common schema (``text``, ``label``, ``domain``) with one set of
class names, so the job runs the same on each; bad input raises ``DataError`` before any training starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from datasets import Dataset, concatenate_datasets

from . import data
from .data import DataError


def load_files(paths: Sequence[str | Path], text_column: str = "text", label_column: str = "label",
               domain_column: str | None = None, labels: Sequence[str] | None = None,
               encoding: str | None = None) -> dict[str, Dataset]:
    """Your table files as domains: the values of ``domain_column``, or one domain per file (its name) without it."""
    tables = [data.load_table(p, text_column, label_column, domain_column=domain_column or None,
                              labels=labels or None, encoding=encoding or None) for p in paths]
    names = [t.features["label"].names for t in tables]
    for path, found in zip(paths, names):
        if found != names[0]:
            raise DataError(f"{path}: classes {found} differ from {paths[0]}'s {names[0]}; name them with labels")
    stems = [Path(p).stem for p in paths]
    if not domain_column and len(set(stems)) < len(stems):
        raise DataError(f"files {list(paths)} share a name, so their domains would merge; rename one or add "
                        "a domain column")
    return by_domain(concatenate_datasets(tables))


def by_domain(ds: Dataset) -> dict[str, Dataset]:
    """One Dataset per value of the ``domain`` column, in sorted order."""
    rows: dict[str, list[int]] = {}
    for i, name in enumerate(ds["domain"]):
        rows.setdefault(name, []).append(i)
    return {name: ds.select(rows[name]) for name in sorted(rows)}


def check_pair(domains: Sequence[str], source: str | None, target: str, where: str) -> None:
    """The source (None: not needed) and target must be domains of the data; the message lists those there are."""
    for role, name in (("source", source), ("target", target)):
        if name is not None and name not in domains:
            raise DataError(f"{role}={name!r} is not a domain of {where}; it has {list(domains)}")
    if source is not None and len(domains) < 2:
        raise DataError(f"{where} has one domain ({list(domains)}); name two with a domain column or give two files")


def job_domains(files: Sequence[str], reviews: str, text_column: str, label_column: str, domain_column: str,
                labels: str, encoding: str, source: str | None, target: str) -> dict[str, Dataset] | None:
    """The domains of ``--data`` files or a ``--reviews`` folder, checked against source and target (None: corpus)."""
    if files and reviews:
        raise DataError("give --data files or a --reviews folder, not both")
    if not files and not reviews:
        return None
    names = [n.strip() for n in labels.split(",") if n.strip()] if labels else None
    if files:
        loaded, where = load_files(files, text_column, label_column, domain_column, names, encoding), \
            ", ".join(map(str, files))
    else:
        loaded, where = dict(data.load_amazon_reviews(reviews, encoding=encoding or None)), str(reviews)
    check_pair(list(loaded), source, target, where)
    return loaded
