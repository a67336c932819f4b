"""Table files read for training and prediction: CSV, TSV or Parquet, by suffix.

A file that cannot be a table, or whose header cannot be read as one, ends in one message naming the
file and what to do, before anything trains.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mmtab.errors import ConfigError, DataValidationError


def read_table(path: str | Path, columns: Sequence[str] | None = None,
               categorical: Sequence[str] = ()) -> pd.DataFrame:
    """CSV, TSV or Parquet, by suffix; a file that cannot be a table is a `DataValidationError`.

    With `columns`, only those of them the file has are read (a wide table costs the memory of the
    columns a config names); if it has none of them, everything is read, so that the checks can say
    what the file does hold. Parquet text columns named in `categorical` are read dictionary-encoded
    (pandas ``category``): a byte or two per row instead of an 8-byte pointer, which is most of a
    large table's memory.
    """
    path = Path(path)
    where = f"data file {str(path)!r}"
    if not path.exists():
        raise ConfigError(f"{where} does not exist (working directory: {Path.cwd()})")
    if path.is_dir():
        raise ConfigError(f"{where} is a folder: give the path of a .csv, .tsv or .parquet file")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".tsv"):
        raise ConfigError(f"{where}: unknown format {suffix!r}; use .csv, .tsv or .parquet")
    if path.stat().st_size == 0:
        raise DataValidationError(["the file is empty: it needs a header row and at least one row of data"], where)
    with path.open("rb") as f:
        start = f.read(4)
    if start[:2] == b"\x1f\x8b":
        raise DataValidationError([f"the file is gzip-compressed, not a plain {suffix} file: decompress it first "
                                   "(gunzip), or save it uncompressed"], where)
    if suffix == ".parquet":
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as error:
            raise DataValidationError([f"it is not a readable Parquet file ({error}): it may be cut short or "
                                       "another format; write it again"], where) from None
        header = schema.names
    else:
        sep = "\t" if suffix == ".tsv" else ","
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:  # -sig: Excel's "CSV UTF-8" mark
            header = next(csv.reader(f, delimiter=sep), [])
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise DataValidationError([f"column {name!r} appears {header.count(name)} times in the header: give each "
                                   "column its own name" for name in twice], f"data file {str(path)!r}")
    wanted = set(columns or ())
    keep = [name for name in header if name in wanted] or None
    if suffix != ".parquet":
        try:
            frame = pd.read_csv(path, sep=sep, usecols=keep)
        except UnicodeDecodeError as error:
            raise DataValidationError([f"the file is not UTF-8 text (byte {error.object[error.start]:#04x} at byte "
                                       f"{error.start}; Latin-1 or Windows-1252, perhaps): save it as UTF-8 (Excel: "
                                       "\"CSV UTF-8\")"], where) from None
    else:
        text = [name for name in categorical if name in header and _is_text_type(schema.field(name).type)]
        frame = pd.read_parquet(path, columns=keep, read_dictionary=text or None)
    if frame.empty:
        raise DataValidationError(["the file has a header and no rows of data"], where)
    # Arrow's allocator keeps the decoding buffers it freed for its next read, which for a table read
    # once and kept is memory held for nothing (the 1M-row figure of benchmarks/throughput.py measures
    # the peak). Handing it back costs about a millisecond.
    pa.default_memory_pool().release_unused()
    return frame


def _is_text_type(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def separator_hint(df: pd.DataFrame) -> str:
    """A one-column CSV whose header holds another separator was written with that separator ("" if not)."""
    if len(df.columns) == 1:
        for sep, name in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
            if sep in str(df.columns[0]):
                return (f"the file looks {name}-separated: its header is one column, {str(df.columns[0])[:80]!r}; "
                        "mmtab reads .csv files as comma-separated (.tsv as tab-separated): save it with commas")
    return ""
