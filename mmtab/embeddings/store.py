"""`EmbeddingStore`: text vectors on disk, so no run encodes a text twice.

While an encoder is frozen its output for a text depends on nothing but its weights, its pooling,
the precision it ran in and the text's token ids (the tokenizer and ``max_length`` act only through
the ids: a different tokenizer or a different truncation gives different ids). So a store is one
folder per *model key* (a digest of the weights, the pooling and the precision) holding vectors
under *row keys* (a digest of each row's real token ids, padding excluded). A changed key finds an
empty folder, never stale vectors.

Layout: ``<cache_dir>/embeddings/<model key>/part-<id>.{keys.npy,vectors.npy,json}``. Each part is
written by one process to temporary names and renamed into place; its ``.json`` (rows, width and
the digests of both arrays) is renamed last and marks the part complete, so a killed run leaves no
part that is read, and two runs at once each add their own part. A part whose files are missing,
mis-shaped or do not match their digests is deleted with a warning and its rows encoded again.
A part's digests are checked once per process (while its files keep their size and time), not on
every lookup. Vectors are memory-mapped and only the rows asked for are read: memory follows the rows in use,
not the size of the store. Many small parts (one per `predict` on new rows) are merged into one
once there are `MAX_PARTS`.

Written by hand, not with a library: what is needed is a keyed, append-only, multi-writer array
store in about 150 lines of numpy; `safetensors` loads whole tensors (no row reads) and a database
would add a dependency for less.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger("mmtab")

KEY_DTYPE = np.dtype("V16")  # a 128-bit digest: collisions are out of reach at any table size
MAX_PARTS = 16
_VERIFIED: set[tuple[str, int, int, int]] = set()  # parts whose digests matched in this process (see `_stamp`)


def default_cache_dir() -> str:
    """``$MMTAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmtab``, else ``~/.cache/mmtab``."""
    if "MMTAB_CACHE_DIR" in os.environ:
        return os.environ["MMTAB_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mmtab")


def model_key(modules: Mapping[str, nn.Module], precision: str) -> str:
    """A digest of every parameter and buffer of `modules` (by name, dtype, shape and bytes), their
    classes and the precision: what decides a frozen encoder's output besides the input."""
    h = hashlib.blake2b(digest_size=16)
    h.update(precision.encode())
    for name, module in modules.items():
        h.update(f"{name}:{type(module).__module__}.{type(module).__qualname__}".encode())
        for key, tensor in module.state_dict().items():
            t = tensor.detach().cpu().contiguous().reshape(-1)
            h.update(f"{key}:{t.dtype}:{tuple(tensor.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()


def row_keys(input_ids: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
    """(N, T) ids and (N,) real lengths -> (N,) 16-byte digests of each row's real tokens."""
    rows = input_ids.to(torch.int64).cpu().numpy()
    digests = b"".join(hashlib.blake2b(rows[i, :n].tobytes(), digest_size=16).digest()
                       for i, n in enumerate(lengths.tolist()))
    return np.frombuffer(digests, dtype=KEY_DTYPE)


def _stamp(stem: Path) -> tuple[str, int, int, int]:
    """A part's identity for `_VERIFIED`: its name and its vectors file's size and change times (a file
    rewritten or truncated since it was checked is checked again)."""
    st = os.stat(f"{stem}.vectors.npy")
    return str(stem), st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()


class EmbeddingStore:
    """The vectors of one model key, in a folder; `folder=None` keeps nothing (every lookup misses)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)

    # ---------------------------------------------------------------------------------- reading
    def lookup(self, keys: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(found (N,) bool, vectors (N, width) float32, zero where not found)."""
        found = np.zeros(len(keys), dtype=bool)
        vectors = np.zeros((len(keys), width), dtype=np.float32)
        for part_keys, part_vectors in self._parts(width):
            order = np.argsort(part_keys)
            sorted_keys = part_keys[order]
            pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
            hit = (sorted_keys[pos] == keys) & ~found
            if hit.any():
                rows = order[pos[hit]]
                read = np.argsort(rows)  # read the memory map in file order
                vectors[np.flatnonzero(hit)[read]] = part_vectors[rows[read]]
                found |= hit
        return found, vectors

    def _parts(self, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
        parts = []
        for meta_path in self._meta_paths():
            stem = meta_path.with_suffix("")
            try:
                meta = json.loads(meta_path.read_text())
                keys = np.load(f"{stem}.keys.npy")
                vectors = np.load(f"{stem}.vectors.npy", mmap_mode="r")
                stamp = _stamp(stem)
                ok = (keys.dtype == KEY_DTYPE and vectors.dtype == np.float32 and len(keys) == meta["rows"]
                      and vectors.shape == (meta["rows"], width)
                      and (stamp in _VERIFIED
                           or (_digest(keys) == meta["keys"] and _digest(vectors) == meta["vectors"])))
            except FileNotFoundError as error:
                if not meta_path.exists():
                    continue  # merged away by another run since we listed the folder
                ok, problem = False, error
            except (OSError, ValueError, KeyError) as error:
                ok, problem = False, error
            else:
                problem = "sizes or digests do not match"
            if ok:
                _VERIFIED.add(stamp)
                parts.append((keys, vectors))
            else:
                log.warning("mmtab: embedding cache part %s is damaged (%s); deleting it, its rows are encoded "
                            "again", stem.name, problem)
                self._delete(stem)
        return parts

    def _meta_paths(self) -> list[Path]:
        if self.folder is None or not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("part-*.json"))

    # ---------------------------------------------------------------------------------- writing
    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Store new rows as one part, written whole or not at all; merge parts once there are many."""
        if self.folder is None or len(keys) == 0:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_part(keys, np.ascontiguousarray(vectors, dtype=np.float32))
        metas = self._meta_paths()
        if len(metas) > MAX_PARTS:
            self._merge(metas, vectors.shape[1])

    def _write_part(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        stem = self.folder / f"part-{uuid.uuid4().hex}"
        tmp = f".{os.getpid()}.tmp"
        for suffix, array in ((".keys.npy", keys), (".vectors.npy", vectors)):
            with open(f"{stem}{suffix}{tmp}", "wb") as f:
                np.save(f, array)
            os.replace(f"{stem}{suffix}{tmp}", f"{stem}{suffix}")
        meta = {"rows": len(keys), "width": int(vectors.shape[1]), "keys": _digest(keys),
                "vectors": _digest(vectors)}
        Path(f"{stem}.json{tmp}").write_text(json.dumps(meta))
        os.replace(f"{stem}.json{tmp}", f"{stem}.json")  # the part exists from here on
        _VERIFIED.add(_stamp(stem))  # its digests were just computed from these arrays
        return stem

    def _merge(self, metas: list[Path], width: int) -> None:
        parts = self._parts(width)
        if not parts:
            return
        keys = np.concatenate([k for k, _ in parts])
        keys, first = np.unique(keys, return_index=True)
        vectors = np.concatenate([np.asarray(v) for _, v in parts])[first]
        self._write_part(keys, vectors)
        for meta in metas:  # a reader holding a map of a deleted file keeps reading it (POSIX)
            self._delete(meta.with_suffix(""))

    @staticmethod
    def _delete(stem: Path) -> None:
        for suffix in (".json", ".keys.npy", ".vectors.npy"):
            Path(f"{stem}{suffix}").unlink(missing_ok=True)
