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


def _projections(in_features: Mapping[str, int], d: int) -> nn.ModuleDict:
    return nn.ModuleDict({name: nn.Linear(width, d) for name, width in sorted(in_features.items())})


class GatedFusion(nn.Module):
    """Each branch projected to width `d`, weighted by its own learned gate, and summed.

    The gate of branch m is ``sigmoid(W_m [all features])`` per unit, so the model can lean on the
    text for one row and on the table for another. With one branch it is a gated projection.
    """

    def __init__(self, in_features: Mapping[str, int], d: int = 128) -> None:
        super().__init__()
        self.names = sorted(in_features)
        total = sum(in_features.values())
        self.project = _projections(in_features, d)
        self.gate = nn.ModuleDict({name: nn.Linear(total, d) for name in self.names})
        self.out_features = d

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        joined = torch.cat([features[n] for n in self.names], dim=1)  # (B, sum(in_features))
        out = 0
        for name in self.names:
            out = out + torch.sigmoid(self.gate[name](joined)) * self.project[name](features[name])  # (B, d)
        return out


class AttentionFusion(nn.Module):
    """Each branch becomes one token of width `d` (plus a learned modality embedding); a transformer
    layer lets the tokens attend to each other; the attended tokens are concatenated."""

    def __init__(self, in_features: Mapping[str, int], d: int = 128, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        if d % heads:
            raise ValueError(f"AttentionFusion: d={d} must be divisible by heads={heads}")
        self.names = sorted(in_features)
        self.project = _projections(in_features, d)
        self.modality = nn.Parameter(torch.zeros(len(self.names), d))
        nn.init.normal_(self.modality, std=0.02)
        self.layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout, batch_first=True)
        self.out_features = d * len(self.names)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        tokens = torch.stack([self.project[n](features[n]) for n in self.names], dim=1)  # (B, M, d)
        return self.layer(tokens + self.modality).flatten(1)  # (B, M * d)
