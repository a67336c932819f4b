"""Pooling: a text encoder's token states -> one vector per row.

Each pooling is a small module built from the encoder's width (``in_features``) that states its
own ``out_features``, and takes ``(hidden (B, T, H), attention_mask (B, T))``. A config picks one by
``class_path``, as it picks a fusion layer; a learned pooling (attention over tokens, say) is one
more class with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

PoolingFactory = Callable[[int], nn.Module]


class MeanPooling(nn.Module):
    """The mean over real tokens; padding is masked out, so a row pools the same padded or not."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.out_features = in_features

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)  # (B, H)


class ClsPooling(nn.Module):
    """The first token's state (``[CLS]`` for BERT-style encoders)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.out_features = in_features

    def forward(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        return hidden[:, 0]  # (B, H)
