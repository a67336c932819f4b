"""Fusion layers: each takes the branches' features by name and returns one vector per row.

Every fusion class is built from the branches' widths (``in_features``, by branch name) and states
its own ``out_features``, so the head sizes itself. `FusionModel` builds it, since only the model
knows which branches it has.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class ConcatFusion(nn.Module):
    """Concatenate the branches' features in a fixed (name-sorted) order. No parameters."""

    def __init__(self, in_features: Mapping[str, int]) -> None:
        super().__init__()
        self.names = sorted(in_features)
        self.out_features = sum(in_features.values())

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        parts = [features[n] for n in self.names]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, sum(in_features))
