"""`EmbeddingCache`: pooled vectors of a frozen encoder, computed once per distinct text.

While the encoder is frozen its output for a text never changes, so later epochs of a
frozen-encoder fusion need not run it again. The cache knows nothing about pooling or freezing:
`TextEncoder` asks it only while its owner says the encoder is frozen, and clears it otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class EmbeddingCache:
    """Vectors keyed by a row's token ids (its real tokens only, so padding never splits a key).

    Args:
        fill_rows: rows encoded together while filling. Rows to encode go in length order, a few at
            a time, each group cut to its own longest row: a shuffled training batch (one long
            review beside short ones) then costs little padding.
    """

    def __init__(self, fill_rows: int = 16) -> None:
        self.fill_rows = fill_rows
        self._vectors: dict[bytes, Tensor] = {}

    def __len__(self) -> int:
        return len(self._vectors)

    def clear(self) -> None:
        self._vectors.clear()

    def lookup(self, ids: Tensor, mask: Tensor, encode: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """(B, T) ids and mask -> (B, H) vectors; rows not seen before are encoded with `encode`."""
        lengths = mask.sum(dim=1).tolist()
        rows = ids.cpu().numpy()
        keys = [rows[i, :n].tobytes() for i, n in enumerate(lengths)]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self._vectors}.values(),
                      key=lambda i: lengths[i])
        for start in range(0, len(todo), self.fill_rows):
            group = todo[start:start + self.fill_rows]
            sel = torch.tensor(group, device=ids.device)
            longest = max(lengths[group[-1]], 1)
            fresh = encode(ids[sel, :longest], mask[sel, :longest])
            for i, vec in zip(group, fresh):
                self._vectors[keys[i]] = vec.detach()
        return torch.stack([self._vectors[k] for k in keys])
