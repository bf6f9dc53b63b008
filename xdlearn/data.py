"""Corpora and domains as ``datasets`` objects, splits, your own files, and batches with dynamic padding.

Every loader returns rows with the same columns, ``text``, ``label`` (a ``ClassLabel``) and ``domain``,
so the same label id means the same class in every domain and every source.
"""
from __future__ import annotations

import contextlib
import hashlib
import html
import math
import random
import re
import warnings
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from torch.utils.data import DataLoader, Sampler

from . import corpus
from .files import READERS, DataError, read_columns, review_blocks

BINARY = ("negative", "positive")
THREE_CLASS = ("negative", "neutral", "positive")


def features(labels: Sequence[str]) -> Features:
    """The one schema every loader produces, so datasets from different sources concatenate."""
    return Features({"text": Value("string"), "label": ClassLabel(names=list(labels)),
                     "domain": Value("string")})


def rating_to_label(rating: float, num_classes: int = 2, threshold: float = 0.5) -> int | None:
    """Map a mean rating on -4..+4 to a class id; None drops a sentence too neutral for binary labels."""
    if num_classes == 2:
        if abs(rating) < threshold:
            return None
        return int(rating > 0)
    if num_classes == 3:
        return 1 if abs(rating) < threshold else (2 if rating > 0 else 0)
    raise DataError(f"num_classes must be 2 or 3, got {num_classes}")


def load_corpus(domains: Sequence[str] | None = None, num_classes: int = 2,
                threshold: float = 0.5) -> DatasetDict:
    """Load the default four-domain corpus (fetched and cached on first use), one Dataset per domain."""
    domains = list(domains or corpus.DOMAINS)
    unknown = [d for d in domains if d not in corpus.DOMAIN_FILES]
    if unknown:
        raise DataError(f"unknown domain(s) {unknown}; the corpus has {list(corpus.DOMAINS)}")
    root = corpus.corpus_dir()
    labels = BINARY if num_classes == 2 else THREE_CLASS
    out = {}
    for domain in domains:
        rows = corpus.parse_ratings_file(root / corpus.DOMAIN_FILES[domain])
        kept = [(r["text"], rating_to_label(r["rating"], num_classes, threshold)) for r in rows]
        kept = [(t, y) for t, y in kept if y is not None]
        out[domain] = Dataset.from_dict(
            {"text": [t for t, _ in kept], "label": [y for _, y in kept], "domain": [domain] * len(kept)},
            features=features(labels))
    return DatasetDict(out)


_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)*")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner apostrophes): one tokeniser for every word count."""
    return _WORD.findall(text.lower())


def duplicate_key(text: str) -> tuple[str, ...]:
    """The words of a sentence, without case or punctuation: variants of one tweet share a key."""
    return tuple(words(text))


def split(ds: Dataset, seed: int = 0, test_size: float | int = 0.2,
          validation_size: float | int = 0.1, group_duplicates: bool = True) -> DatasetDict:
    """Split one domain into train / validation / test, the same way for the same seed on any machine.

    With ``group_duplicates`` sentences with the same words (``duplicate_key``) land in the same
    split, so a test sentence never has a near-copy in training that would inflate its accuracy.
    """
    n = len(ds)
    n_test = test_size if isinstance(test_size, int) else round(n * test_size)
    n_val = validation_size if isinstance(validation_size, int) else round(n * validation_size)
    if n_test + n_val >= n:
        raise DataError(f"test ({n_test}) + validation ({n_val}) leave no training rows of {n}")
    groups: dict = {}
    for i, text in enumerate(ds["text"]):
        groups.setdefault(duplicate_key(text) if group_duplicates else i, []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    parts: dict[str, list[int]] = {"test": [], "validation": [], "train": []}
    for rows in order:  # whole groups; a group that would overflow a split goes to the next one
        if len(parts["test"]) + len(rows) <= n_test:
            parts["test"] += rows
        elif len(parts["validation"]) + len(rows) <= n_val:
            parts["validation"] += rows
        else:
            parts["train"] += rows
    return DatasetDict({name: ds.select(rows) for name, rows in parts.items()})


def sample_labels(ds: Dataset, n: int, seed: int = 0, balanced: bool = True) -> Dataset:
    """Take a label budget of ``n`` rows, class-balanced when possible, as a scarce-label target would be."""
    if n >= len(ds):
        return ds
    rng = random.Random(seed)
    if not balanced:
        return ds.select(sorted(rng.sample(range(len(ds)), n)))
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(ds["label"]):
        by_class.setdefault(y, []).append(i)
    for rows in by_class.values():
        rng.shuffle(rows)
    picked, k = [], 0
    while len(picked) < n:  # round-robin over classes until the budget is spent
        for rows in by_class.values():
            if k < len(rows) and len(picked) < n:
                picked.append(rows[k])
        k += 1
    return ds.select(sorted(picked))


def unlabeled(ds: Dataset) -> Dataset:
    """The text of a split without its labels: the pool an unsupervised method may read."""
    return ds.remove_columns([c for c in ds.column_names if c not in ("text", "domain")])


def domain_splits(domains: Sequence[str] | None = None, seed: int = 0, num_classes: int = 2,
                  test_size: float | int = 0.2, validation_size: float | int = 0.1,
                  max_train: int | None = None, group_duplicates: bool = True) -> dict[str, DatasetDict]:
    """Load the corpus and split every domain: ``{domain: DatasetDict(train, validation, test)}``.

    Near-duplicate sentences stay in one split (see ``split``) unless ``group_duplicates=False``.
    """
    return split_domains(load_corpus(domains, num_classes=num_classes), seed=seed, test_size=test_size,
                         validation_size=validation_size, max_train=max_train, group_duplicates=group_duplicates)


def split_domains(loaded: Mapping[str, Dataset], seed: int = 0, test_size: float | int = 0.2,
                  validation_size: float | int = 0.1, max_train: int | None = None,
                  group_duplicates: bool = True) -> dict[str, DatasetDict]:
    """Split every domain of ``loaded`` (any source) the same way; a domain too small for the sizes is named."""
    out = {}
    for name, ds in loaded.items():
        try:
            parts = split(ds, seed=seed, test_size=test_size, validation_size=validation_size,
                          group_duplicates=group_duplicates)
        except DataError as err:
            raise DataError(f"domain {name!r} ({len(ds)} rows): {err}; choose smaller test and validation sizes")
        if max_train is not None:
            parts["train"] = sample_labels(parts["train"], max_train, seed=seed, balanced=False)
        out[name] = parts
    return out


# ---------------------------------------------------------------------------------------------
# Your own data: tables, hub datasets, the Amazon multi-domain review layout
# ---------------------------------------------------------------------------------------------
RARE_SHARE = 0.02      # without labels=, a class this rare (or a single row) is worth a warning: a typo?
RARE_CHECK_ROWS = 20   # ...in a table of at least this many rows


def _is_null(value) -> bool:
    """None, NaN or a pandas/NumPy missing value: what a reader gives for an empty cell."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _nulls(values: list) -> list[int]:
    """1-based rows whose value is missing."""
    return [row for row, v in enumerate(values, start=1) if _is_null(v)]


def _check_texts(values: list, where: str) -> list[str]:
    """Texts as strings: a null, a non-string or an empty text is an error naming its rows (never the text 'nan')."""
    missing = _nulls(values)
    if missing:
        raise DataError(f"{where} is missing (null) in row(s) {missing[:10]}")
    for row, value in enumerate(values, start=1):
        if not isinstance(value, str):
            raise DataError(f"{where}, row {row}: {value!r} is a {type(value).__name__}, not text")
    empty = [row for row, t in enumerate(values, start=1) if not t.strip()]
    if empty:
        raise DataError(f"{where} is empty in row(s) {empty[:10]}")
    return values


def _label_text(value) -> str:
    """A label value as text: ``1.0`` (a float column) reads as ``1``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _inferred_labels(as_text: list[str], where: str) -> list[str]:
    """Classes found in the data, numbers in numeric order, with a warning for one so rare it may be a typo."""
    counts = {name: as_text.count(name) for name in set(as_text)}
    rare = sorted(n for n, c in counts.items() if c < max(2, RARE_SHARE * len(as_text)))
    if rare and len(counts) > 1 and len(as_text) >= RARE_CHECK_ROWS:
        warnings.warn(f"{where}: label(s) {rare} are rare ({ {n: counts[n] for n in rare} } of {len(as_text)} rows); "
                      f"classes found: {dict(sorted(counts.items()))}. If one is a typo, fix it or pass labels=.",
                      stacklevel=3)
    digit = lambda s: s.lstrip("-").isdigit()  # noqa: E731
    return sorted(counts, key=lambda s: (not digit(s), int(s) if digit(s) else 0, s))


def _label_ids(values: list, labels: list[str] | None, where: str) -> tuple[list[int], list[str]]:
    """Turn raw label values (names or ids) into ids of ``labels``, naming the first unknown or missing value."""
    missing = _nulls(values)
    if missing:
        raise DataError(f"{where}: label is missing (null) in row(s) {missing[:10]}")
    as_text = [_label_text(v) for v in values]
    labels = list(labels) if labels is not None else _inferred_labels(as_text, where)
    index = {name: i for i, name in enumerate(labels)}
    ids = []
    for row, value in enumerate(as_text):
        if value in index:
            ids.append(index[value])
        elif value.isdigit() and int(value) < len(labels):
            ids.append(int(value))
        else:
            raise DataError(f"{where}, row {row + 1}: label {value!r} is not one of {labels}")
    return ids, list(labels)


def load_table(path: str | Path, text_column: str = "text", label_column: str = "label",
               domain_column: str | None = None, labels: Sequence[str] | None = None,
               domain: str | None = None, format: str | None = None, encoding: str | None = None) -> Dataset:
    """Load your CSV / TSV / JSON(L) / Parquet file into the common schema, checking every row.

    ``encoding`` reads a text file that is not UTF-8; without ``labels`` the classes are the values found.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    fmt = format or READERS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown format {path.suffix!r}; pass format= one of {sorted(set(READERS.values()))}")
    columns = read_columns(path, fmt, encoding)
    wanted = [c for c in (text_column, label_column, domain_column) if c]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; the file has {list(columns)}")
    texts = _check_texts(columns[text_column], f"{path}: column {text_column!r}")
    ids, names = _label_ids(columns[label_column], list(labels) if labels else None,
                            f"{path}, column {label_column!r}")
    if domain_column:
        _check_texts([v if _is_null(v) else str(v) for v in columns[domain_column]], f"{path}: column {domain_column!r}")
    domains = ([str(v) for v in columns[domain_column]] if domain_column else [domain or path.stem] * len(texts))
    return Dataset.from_dict({"text": texts, "label": ids, "domain": domains}, features=features(names))


def load_hub(name: str, split: str = "train", text_column: str = "text", label_column: str = "label",
             domain: str | None = None, config: str | None = None) -> Dataset:
    """Load a Hugging Face hub dataset (needs the network) into the common schema."""
    try:
        raw = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # the hub raises many types; all mean the same to a learner
        raise DataError(f"could not load hub dataset {name!r} ({type(err).__name__}: {err}). "
                        "Offline, use load_corpus() (the built-in default) or load_table(path).") from None
    for column in (text_column, label_column):
        if column not in raw.column_names:
            raise DataError(f"hub dataset {name!r}: no column {column!r}; it has {raw.column_names}")
    feature = raw.features[label_column]
    names = feature.names if isinstance(feature, ClassLabel) else None
    values = [names[v] for v in raw[label_column]] if names else list(raw[label_column])
    ids, names = _label_ids(values, names, f"hub dataset {name!r}, column {label_column!r}")
    texts = _check_texts(list(raw[text_column]), f"hub dataset {name!r}: column {text_column!r}")
    return Dataset.from_dict({"text": texts, "label": ids,
                              "domain": [domain or name] * len(ids)}, features=features(names))


def _field(block: str, tag: str) -> str:
    """One field of a pseudo-XML review block; raw '&' and stray markup are tolerated, not parsed."""
    match = re.search(rf"<{tag}>(.*?)</{tag}>", block, re.S)
    return html.unescape(match.group(1).strip()) if match else ""


def parse_review_file(path: str | Path, include_title: bool = False, encoding: str | None = None) -> list[str]:
    """Read one ``positive.review`` / ``negative.review`` file of the Blitzer et al. (2007) layout.

    Each review is decoded on its own (UTF-8, else Windows-1252) unless ``encoding`` names the file's encoding.
    A file without reviews is an error: a class silently missing would make every score meaningless.
    """
    path = Path(path)
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; each domain needs reviews in both classes")
    reviews = []
    for block in review_blocks(raw, path, encoding):
        body = _field(block, "review_text")
        title = _field(block, "title")
        body = f"{title}. {body}" if include_title and title else body
        if body:
            reviews.append(" ".join(body.split()))
    if not reviews:
        raise DataError(f"{path}: no <review>...<review_text> blocks found; is this a .review file?")
    return reviews


def load_amazon_reviews(root: str | Path, domains: Sequence[str] | None = None,
                        include_title: bool = False, encoding: str | None = None) -> DatasetDict:
    """Load ``<root>/<domain>/{positive,negative}.review`` into one binary-labelled Dataset per domain.

    Every sub-folder is a domain and must hold both files: a folder missing one is an error, never skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory of <domain>/positive.review files")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found and not domains:
        raise DataError(f"{root}: no domain folders; expected <domain>/positive.review and <domain>/negative.review")
    out = {}
    for domain in list(domains or found):
        texts, ids = [], []
        for label_id, name in enumerate(BINARY):
            path = root / domain / f"{name}.review"
            if not path.is_file():
                raise DataError(f"{path}: missing; each domain needs positive.review and negative.review")
            reviews = parse_review_file(path, include_title, encoding)
            texts += reviews
            ids += [label_id] * len(reviews)
        out[domain] = Dataset.from_dict({"text": texts, "label": ids, "domain": [domain] * len(ids)},
                                        features=features(BINARY))
    return DatasetDict(out)


# ---------------------------------------------------------------------------------------------
# Tokenisation and batches
# ---------------------------------------------------------------------------------------------
def tokenize(ds: Dataset, tokenizer, max_length: int = 128) -> Dataset:
    """Add ``input_ids`` / ``attention_mask`` without padding: padding happens per batch, later."""
    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length)
    # datasets would fingerprint the map by pickling the whole tokenizer (about a second a call); name it instead
    fingerprint = hashlib.sha256(repr((ds._fingerprint, type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""),
                                       len(tokenizer), max_length)).encode()).hexdigest()[:32]
    with quiet_datasets():
        return ds.map(encode, batched=True, load_from_cache_file=False, new_fingerprint=fingerprint,
                      remove_columns=[c for c in ("input_ids", "attention_mask", "token_type_ids")
                                      if c in ds.column_names])


def tokenized(ds: Dataset, tokenizer, max_length: int = 128) -> Dataset:
    """``ds`` itself if it already has ``input_ids``, else tokenised: a loader never tokenises twice."""
    if "input_ids" in ds.column_names:
        return ds
    if tokenizer is None:
        raise DataError("dataset is not tokenised: pass tokenizer= (or call xdlearn.data.tokenize)")
    return tokenize(ds, tokenizer, max_length)


@contextlib.contextmanager
def quiet_datasets():
    """No ``datasets`` progress bars inside: a bar per map() would drown the training bars."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of similar length in random order: little padding, still a shuffled epoch.

    Indices are shuffled, cut into chunks of ``batch_size * chunk_batches``, each chunk is sorted
    by length and cut into batches, and the batches are shuffled. ``set_epoch`` reseeds, so epoch
    ``e`` of a resumed run sees exactly the batches it would have seen without the interruption.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0,
                 shuffle: bool = True, chunk_batches: int = 50, drop_last: bool = False):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.shuffle, self.chunk_batches, self.drop_last, self.epoch = shuffle, chunk_batches, drop_last, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order to produce (called by the training loop)."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """The epoch's batches, computed deterministically from seed and epoch."""
        order = list(range(len(self.lengths)))
        if not self.shuffle:  # evaluation: sort by length only, the caller restores the order
            order.sort(key=lambda i: self.lengths[i])
            return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng = random.Random(self.seed * 100_003 + self.epoch)
        rng.shuffle(order)
        chunk = self.batch_size * self.chunk_batches
        out = []
        for start in range(0, len(order), chunk):
            part = sorted(order[start:start + chunk], key=lambda i: self.lengths[i])
            out += [part[i:i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        rng.shuffle(out)
        return out

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = len(self.lengths) / self.batch_size
        return math.floor(n) if self.drop_last else math.ceil(n)


class PadCollator:
    """Pad a list of tokenised rows to the longest in the batch and stack them as tensors."""

    def __init__(self, pad_token_id: int = 0, keys: Sequence[str] = ("input_ids", "attention_mask",
                                                                      "token_type_ids")):
        self.pad_token_id, self.keys = pad_token_id, keys

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        batch = {}
        for key in self.keys:
            if key in rows[0]:
                fill = self.pad_token_id if key == "input_ids" else 0
                batch[key] = torch.tensor([list(r[key]) + [fill] * (width - len(r[key])) for r in rows])
        for key, value in rows[0].items():  # labels, teacher logits, domain ids... ride along
            if key not in batch and isinstance(value, (int, float, list)) and key not in self.keys:
                batch["labels" if key == "label" else key] = torch.tensor([r[key] for r in rows])
        return batch


def make_loader(ds: Dataset, tokenizer=None, batch_size: int = 32, shuffle: bool = True,
                seed: int = 0, max_length: int = 128, group_by_length: bool = True) -> DataLoader:
    """A DataLoader over ``ds`` with dynamic padding and (by default) length-grouped batches."""
    ds = tokenized(ds, tokenizer, max_length)
    keep = [c for c in ds.column_names if c not in ("text", "domain")]
    ds = ds.select_columns(keep)
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    lengths = [len(x) for x in ds["input_ids"]]
    # Its own generator: iterating a loader never draws from (and so never shifts) the global RNG.
    generator = torch.Generator().manual_seed(seed)
    if group_by_length:
        sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=seed, shuffle=shuffle)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=PadCollator(pad_id), generator=generator)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=PadCollator(pad_id))


INPUT_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")   # the columns a batch pads, as PadCollator


class SortedBatches:
    """Inference batches: rows sorted by length (the order of ``make_loader(shuffle=False)``), padded with torch.

    ``PadCollator`` builds every batch from Python lists, which at batch 1 costs as much as a small student's
    forward pass. Here each input column is read from Arrow once and laid out flat in batch order, so a batch
    is a slice of it: a view when its rows share one length (every batch of 1), else one masked copy. A batch
    holds the input columns only (no labels); ``order`` lists the dataset rows in the order they come out.
    """

    def __init__(self, ds: Dataset, batch_size: int = 64, pad_token_id: int = 0):
        table = ds.select_columns([c for c in INPUT_COLUMNS if c in ds.column_names]).with_format("arrow")[:]
        lengths = pc.list_value_length(table["input_ids"]).to_numpy(zero_copy_only=False).astype(np.int64)
        self.batches = LengthGroupedBatchSampler(lengths.tolist(), batch_size, shuffle=False).batches()
        self.order = [i for rows in self.batches for i in rows]
        order = np.asarray(self.order, dtype=np.int64)
        self.lengths = torch.from_numpy(lengths[order])
        self.spans = _spans(lengths[order], [len(rows) for rows in self.batches])
        gather = _token_positions(lengths, order)
        self.columns = {key: torch.from_numpy(_flat(pc.list_flatten(table[key]))[gather]) for key in table.column_names}
        self.fills = {key: pad_token_id if key == "input_ids" else 0 for key in self.columns}

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for rows, tokens, width in self.spans:
            if tokens.stop - tokens.start == (rows.stop - rows.start) * width:  # one length: views, no copy
                yield {key: flat[tokens].view(rows.stop - rows.start, width) for key, flat in self.columns.items()}
                continue
            real = torch.arange(width).unsqueeze(0) < self.lengths[rows].unsqueeze(1)
            yield {key: _pad(flat[tokens], real, self.fills[key]) for key, flat in self.columns.items()}


def _spans(lengths: np.ndarray, sizes: list[int]) -> list[tuple[slice, slice, int]]:
    """Per batch of ``sizes`` consecutive rows of ``lengths``: its rows, its tokens in the flat column, its width."""
    if not sizes:
        return []
    row_bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    token_bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)[row_bounds].tolist()
    widths = np.maximum.reduceat(lengths, row_bounds[:-1]).tolist()
    rows = row_bounds.tolist()
    return [(slice(rows[i], rows[i + 1]), slice(token_bounds[i], token_bounds[i + 1]), widths[i])
            for i in range(len(sizes))]


def _flat(values: pa.ChunkedArray) -> np.ndarray:
    """An Arrow array of token values as int64, the dtype ``PadCollator``'s ``torch.tensor`` gives."""
    return values.to_numpy(zero_copy_only=False).astype(np.int64)


def _token_positions(lengths: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Where each token of the rows in ``order`` sits in the flat column of the rows in dataset order."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    picked = lengths[order]
    row_start = np.repeat(starts[order], picked)
    within = np.arange(int(picked.sum()), dtype=np.int64) - np.repeat(np.cumsum(picked) - picked, picked)
    return row_start + within


def _pad(tokens: torch.Tensor, real: torch.Tensor, fill: int) -> torch.Tensor:
    """Rows laid end to end in ``tokens`` as a (rows, width) tensor: ``real`` marks their places, the rest is ``fill``."""
    padded = tokens.new_full(real.shape, fill)
    padded[real] = tokens
    return padded
