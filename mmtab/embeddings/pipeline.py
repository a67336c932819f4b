"""Text vectors as data: computed once per distinct text, kept on disk, shared across processes and
attached to a table, so training batches skip the encoder.

`TextEmbeddings` is the one entry: the training module calls `attach` when a stage starts, and so
does `mmtab.predict_frame`. `embed_table` does the work for any `VectorSource`; the frozen encoder
(`FrozenEncoder`) is the first source, and a fine-tuned or reduced one is a second source, not a
second pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mmtab.embeddings.frozen import PROBE_ROWS, FrozenEncoder, Precision, VectorSource
from mmtab.embeddings.store import EmbeddingStore, default_cache_dir, row_keys
from mmtab.errors import ConfigError

if TYPE_CHECKING:
    from mmtab.data.dataset import TensorTable
    from mmtab.models.fusion_model import FusionModel
    from mmtab.models.text import TextEncoder

log = logging.getLogger("mmtab")


@dataclass(frozen=True)
class ProcessShare:
    """Several processes embedding the same table: each encodes its own part of the missing rows and
    reads the others' from the cache after `barrier` (every process calls it at the same points)."""

    rank: int
    world_size: int
    barrier: Callable[[], None]

    def part(self, rows: np.ndarray) -> np.ndarray:
        return np.array_split(rows, self.world_size)[self.rank]


@dataclass
class TextEmbeddings:
    """How a frozen text branch's vectors are computed and kept.

    Args:
        cache_dir: where the vectors are kept (an `EmbeddingStore` per weights, pooling and
            precision), so a second run, or ``predict`` on rows seen before, encodes nothing.
            ``null`` keeps nothing on disk. Default ``$MMTAB_CACHE_DIR``, else ``~/.cache/mmtab``.
        precision: of the encoder pass. ``auto`` uses bf16 where the hardware computes in it (a GPU
            that supports it; a CPU with AVX512-BF16 or AMX) and the vectors of the first rows are
            within cosine 0.999 of fp32, else fp32. ``fp32`` always.
    """

    cache_dir: str | None = default_cache_dir()  # read once, at import, and shown in the config
    precision: Precision = "auto"

    def check(self) -> None:
        """A cache folder that cannot be one (a file of that name) is a `ConfigError` naming it."""
        if self.cache_dir is None:
            return
        folder = Path(self.cache_dir).expanduser()
        blocking = next(p for p in (folder, *folder.parents) if p.exists())  # the nearest that exists
        if not blocking.is_dir():
            raise ConfigError(f"the text-embedding cache folder {str(folder)!r} cannot be made: {str(blocking)!r} is "
                              "a file. Set MMTAB_CACHE_DIR (or model.text_embeddings.cache_dir) to a folder, or to "
                              "null to keep nothing on disk")

    def attach(self, net: FusionModel, table: TensorTable, share: ProcessShare | None = None) -> None:
        """With `net`'s text branch frozen, put each row's vector in `table` (``text_embedding``), so
        its batches skip the encoder; otherwise leave `table` as it is."""
        if net.text is None or "text" not in net.frozen:
            return
        ids, mask = table.tensors["input_ids"], table.tensors["attention_mask"]
        # a text per column: every column's texts are rows of one pass (and of one cache), side by side after
        vectors = self.embed(net.text, ids.flatten(0, ids.ndim - 2), mask.flatten(0, mask.ndim - 2), share)
        table.put("text_embedding", vectors.view(len(ids), -1))

    def embed(self, text: TextEncoder, input_ids: Tensor, attention_mask: Tensor,
              share: ProcessShare | None = None) -> Tensor:
        """(N, T) ids and mask of a whole table -> (N, width) float32 vectors of `text`'s current weights."""
        source = FrozenEncoder(text, self.precision)
        return embed_table(source, input_ids, attention_mask, cache_dir=self.cache_dir, share=share)


def embed_table(source: VectorSource, input_ids: Tensor, attention_mask: Tensor, *, cache_dir: str | None,
                share: ProcessShare | None = None) -> Tensor:
    """(N, T) ids and mask -> (N, width) float32 vectors, read from the cache where it has them; the
    rest computed once per distinct text and added to it."""
    try:
        with torch.inference_mode():
            vectors = _embed(source, input_ids, attention_mask, cache_dir, share)
    finally:
        source.release()
    return torch.from_numpy(vectors)  # made outside inference mode: usable in any later autograd graph


def _embed(source: VectorSource, input_ids: Tensor, attention_mask: Tensor, cache_dir: str | None,
           share: ProcessShare | None) -> np.ndarray:
    started = time.perf_counter()
    keys, first, inverse = np.unique(row_keys(input_ids, attention_mask.sum(dim=1)), return_index=True,
                                     return_inverse=True)
    first_t = torch.from_numpy(first)

    def fill(store: EmbeddingStore, vectors: np.ndarray, which: np.ndarray, precision: str) -> None:
        if len(which):
            rows = first_t[which]
            vectors[which] = source.encode(input_ids[rows], attention_mask[rows], precision).numpy()
            store.add(keys[which], vectors[which])

    for precision in source.precisions():
        store = EmbeddingStore(None if cache_dir is None else
                               Path(cache_dir).expanduser() / "embeddings" / source.key(precision))
        found, vectors = store.lookup(keys, source.width)
        todo = np.flatnonzero(~found)
        if share is not None:
            share.barrier()  # every process has looked before any writes: all agree on `todo`
        probe = first_t[todo[:PROBE_ROWS]]
        if len(todo) and not source.accepts(precision, input_ids[probe], attention_mask[probe]):
            continue
        shared = share is not None and store.folder is not None
        fill(store, vectors, share.part(todo) if shared else todo, precision)
        if shared and len(todo):
            share.barrier()  # every process has written its part
            found, vectors = store.lookup(keys, source.width)
            fill(store, vectors, np.flatnonzero(~found), precision)  # a cache folder not every node sees
        log.info("mmtab: text embeddings for %d rows (%d distinct): %d from the cache, %d encoded in %s, %.1f s",
                 len(input_ids), len(keys), len(keys) - len(todo), len(todo), precision,
                 time.perf_counter() - started)
        return vectors[inverse]
    raise AssertionError("a source's last precision is always accepted")  # pragma: no cover
