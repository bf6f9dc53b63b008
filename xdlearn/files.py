"""Your files as plain columns: CSV, TSV, JSON, JSON lines, Parquet and ``.review`` files, read strictly.

Every reader returns ``{column: [values]}`` with nulls as ``None`` and never guesses silently: a row with
more fields than the header, a file that is not in its encoding, an empty file or a header without rows
raises :class:`DataError` naming the file and the row or byte at fault. ``xdlearn.data`` turns the columns
into datasets.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

READERS = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".json": "json", ".jsonl": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}
ENCODING_HINT = "pass encoding= with the file's encoding (e.g. encoding='latin-1'; on the command line, --encoding latin-1)"


class DataError(ValueError):
    """Input data is unusable; the message names the file, column, row or value at fault."""


def decode(raw: bytes, path: Path, encoding: str | None) -> str:
    """Bytes as text in ``encoding`` (UTF-8 by default), naming the first byte that does not decode and its line."""
    try:
        return raw.decode(encoding or "utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}: byte {raw[err.start]:#04x} at offset {err.start} (line {line}) is not valid "
                        f"{encoding or 'UTF-8'}; {ENCODING_HINT}") from None
    except LookupError:
        raise DataError(f"{path}: unknown encoding {encoding!r}") from None


def read_columns(path: Path, fmt: str, encoding: str | None = None) -> dict[str, list]:
    """Read a table file as columns; an empty file, a header without rows or a parser failure names the file."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    if fmt == "parquet":
        columns = _read_parquet(path)
    else:
        text = decode(path.read_bytes(), path, encoding).lstrip("\ufeff")
        columns = _read_delimited(text, path, fmt) if fmt in ("csv", "tsv") else _read_json(text, path, fmt)
    if not columns:
        raise DataError(f"{path}: no rows and no columns")
    if not len(next(iter(columns.values()))):
        raise DataError(f"{path}: no rows, only a header ({list(columns)})")
    return columns


def _read_parquet(path: Path) -> dict[str, list]:
    """A Parquet file's columns as Python values (nulls are None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        return pq.read_table(path).to_pydict()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot be read as PARQUET: {err}") from None


def _read_delimited(text: str, path: Path, fmt: str) -> dict[str, list]:
    """CSV / TSV with a header; a row whose field count differs from the header's (bar empty trailing fields) is an error."""
    try:
        rows = list(csv.reader(text.splitlines(), delimiter="," if fmt == "csv" else "\t", strict=True))
    except csv.Error as err:
        raise DataError(f"{path}: cannot be read as {fmt.upper()}: {err}") from None
    rows = [r for r in rows if r]  # blank lines
    if not rows:
        raise DataError(f"{path}: the file is empty")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header):
        raise DataError(f"{path}: cannot be read as {fmt.upper()}: the header repeats a column name: {header}")
    for number, row in enumerate(rows[1:], start=1):
        extra = row[len(header):]
        if len(row) < len(header) or any(field.strip() for field in extra):
            raise DataError(f"{path}: cannot be read as {fmt.upper()}: row {number} has {len(row)} fields, "
                            f"the header has {len(header)} ({header})")
    return {name: [row[i] for row in rows[1:]] for i, name in enumerate(header)}


def _read_json(text: str, path: Path, fmt: str) -> dict[str, list]:
    """A JSON array of objects, an object of columns, or JSON lines (one object per line)."""
    if fmt == "json":
        try:
            return _json_columns(json.loads(text), path)
        except json.JSONDecodeError:
            pass  # maybe JSON lines in a .json file: read it so below
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: cannot be read as {fmt.upper()}: line {number}: {err}") from None
    return _json_columns(records, path)


def _json_columns(value, path: Path) -> dict[str, list]:
    """Columns of parsed JSON: a list of records, ``{column: [values]}`` or ``{column: {row: value}}``."""
    if isinstance(value, dict):
        columns = {k: list(v.values()) if isinstance(v, dict) else v for k, v in value.items()}
        if not all(isinstance(v, list) for v in columns.values()):
            raise DataError(f"{path}: a JSON object must map each column to a list of values")
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise DataError(f"{path}: the JSON columns have different lengths: {lengths}")
        return columns
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON array of records or an object of columns")
    bad = [i + 1 for i, r in enumerate(value) if not isinstance(r, dict)]
    if bad:
        raise DataError(f"{path}: record(s) {bad[:10]} are not JSON objects")
    names = list(dict.fromkeys(k for record in value for k in record))
    return {name: [record.get(name) for record in value] for name in names}


# ---- the Blitzer et al. (2007) review layout ---------------------------------------------------------------
_REVIEW = re.compile(rb"<review>(.*?)</review>", re.S)


def review_blocks(raw: bytes, path: Path, encoding: str | None) -> list[str]:
    """The ``<review>`` blocks of a file as text, each decoded on its own.

    Without ``encoding``, a block that is not valid UTF-8 is read as Windows-1252 (the published files mix
    encodings), so one stray byte no longer turns the whole file's UTF-8 into mojibake.
    """
    if encoding:
        return re.findall(r"<review>(.*?)</review>", decode(raw, path, encoding), re.S)
    blocks = []
    for match in _REVIEW.finditer(raw):
        try:
            blocks.append(match.group(1).decode("utf-8"))
        except UnicodeDecodeError:
            blocks.append(_legacy_decode(match.group(1)))
    return blocks


def _legacy_decode(raw: bytes) -> str:
    """One review that is not UTF-8: Windows-1252 (curly quotes), or Latin-1 for its few bytes 1252 leaves undefined."""
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
