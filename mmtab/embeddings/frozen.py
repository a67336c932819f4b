"""`FrozenEncoder`: the first source of text vectors, a text branch's encoder with its weights held fixed.

A source says what decides its vectors besides the token ids (`key`), in which precisions it can
compute them (`precisions`, `accepts`) and computes them (`encode`); `mmtab.embeddings.pipeline`
does the rest (distinct texts, the disk cache, several processes) for any source alike.
"""

from __future__ import annotations

import copy
import logging
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import torch
from torch import Tensor, nn

from mmtab.embeddings.store import model_key
from mmtab.threads import recheck as recheck_threads

if TYPE_CHECKING:
    from mmtab.models.text import TextEncoder

log = logging.getLogger("mmtab")

ENCODE_BATCH_TOKENS = 2048  # real tokens per encoding batch: the fastest on a 2-core CPU (benchmarks/throughput.py)
BF16_MIN_COSINE = 0.999  # bf16 vectors are used only when each probe row is this close to its fp32 vector
PROBE_ROWS = 8  # rows encoded in both precisions for that check (fp32 costs 3x bf16)
_BF16_VERDICTS: dict[tuple[str, str], bool] = {}  # (model key, device type) -> bf16 accepted, once per process
Precision = Literal["auto", "fp32"]


class VectorSource(Protocol):
    """What `mmtab.embeddings.pipeline.embed_table` needs of a source of text vectors."""

    width: int

    def precisions(self) -> list[str]:
        """The precisions to try, best first (the last always `accepts`)."""

    def key(self, precision: str) -> str:
        """A digest of everything that decides a vector besides the row's token ids."""

    def accepts(self, precision: str, input_ids: Tensor, attention_mask: Tensor) -> bool:
        """Whether vectors of these (probe) rows computed in `precision` are close enough to exact ones."""

    def encode(self, input_ids: Tensor, attention_mask: Tensor, precision: str) -> Tensor:
        """(n, T) ids and mask -> (n, width) float32 vectors on the CPU."""

    def release(self) -> None:
        """Free whatever was held only while a table was being embedded."""


class FrozenEncoder:
    """A `TextEncoder`'s pooled output under its current weights.

    `precision`: ``auto`` computes in bf16 where the device does natively (a GPU that supports it, a
    CPU with AVX512-BF16 or AMX) and the probe rows agree with fp32 to cosine `BF16_MIN_COSINE`;
    ``fp32`` always computes in fp32. One source serves one table: the weights do not change while
    it is in use.
    """

    def __init__(self, text: TextEncoder, precision: Precision = "auto") -> None:
        self.text = text
        self.width = text.pooling.out_features  # one text's vector (a row with a text per column has several)
        self.precision = precision
        self._keys: dict[str, str] = {}
        self._bf16: nn.Module | None = None  # a bf16 copy of the encoder while this source is in use

    @property
    def device(self) -> torch.device:
        return self.text.no_text.device

    def precisions(self) -> list[str]:
        return ["bf16", "fp32"] if self.precision == "auto" and bf16_is_native(self.device.type) else ["fp32"]

    def key(self, precision: str) -> str:
        if precision not in self._keys:  # a digest of every weight: computed once per table
            self._keys[precision] = model_key({"encoder": self.text.encoder, "pooling": self.text.pooling}, precision)
        return self._keys[precision]

    def accepts(self, precision: str, input_ids: Tensor, attention_mask: Tensor) -> bool:
        """bf16 is decided once per weights (`key`), on the first rows that need encoding."""
        if precision == "fp32":
            return True
        key = (self.key(precision), self.device.type)
        if key not in _BF16_VERDICTS:
            low = self.encode(input_ids, attention_mask, precision)
            full = self.encode(input_ids, attention_mask, "fp32")
            worst = float(torch.nn.functional.cosine_similarity(low, full, dim=1).min())
            if worst < BF16_MIN_COSINE:
                log.warning("mmtab: bf16 text embeddings differ from fp32 (cosine %.5f < %s); encoding in fp32",
                            worst, BF16_MIN_COSINE)
            _BF16_VERDICTS[key] = worst >= BF16_MIN_COSINE
        return _BF16_VERDICTS[key]

    def encode(self, input_ids: Tensor, attention_mask: Tensor, precision: str) -> Tensor:
        """Rows in length order, each batch about `ENCODE_BATCH_TOKENS` real tokens and cut to its
        longest row (little padding); bf16 runs a bf16 copy of the encoder (its weights cast once,
        not on every call as autocast casts weights that need no gradient)."""
        if precision == "bf16" and self._bf16 is None:
            self._bf16 = copy.deepcopy(self.text.encoder).to(torch.bfloat16)
        encoder = self._bf16 if precision == "bf16" else self.text.encoder
        device = self.device
        lengths = attention_mask.sum(dim=1)
        order = torch.argsort(lengths, stable=True)
        out = torch.empty(len(order), self.width)
        sorted_lengths = lengths[order].clamp_min(1).tolist()
        start = 0
        while start < len(order):
            recheck_threads()  # a long pass sees a neighbour that starts or stops
            stop = start + 1  # grow the batch while its rows times its longest stay within the budget
            while stop < len(order) and (stop + 1 - start) * sorted_lengths[stop] <= ENCODE_BATCH_TOKENS:
                stop += 1
            longest = sorted_lengths[stop - 1]
            rows = order[start:stop]
            ids = input_ids[rows, :longest].to(device, non_blocking=True)
            mask = attention_mask[rows, :longest].to(device, non_blocking=True)
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            out[rows] = self.text.pooling(hidden.float(), mask).float().cpu()
            start = stop
        return out

    def release(self) -> None:
        """Drop the bf16 copy (as large as the encoder) once a table is embedded."""
        self._bf16 = None


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
