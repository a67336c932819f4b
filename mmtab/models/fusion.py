"""Fusion layers: each takes the branches' features by name and returns one vector per row.

Every fusion class is built from the branches' widths (``in_features``, by branch name) and states
its own ``out_features``, so the head sizes itself. `FusionModel` builds it, since only the model
knows which branches it has.

With two or more branches each branch's features first go through their own LayerNorm
(``normalize=True``, the default). The branches come out on very different scales: the tabular
branch ends in BatchNorm (about unit variance per unit) while MiniLM's mean-pooled embedding has a
per-unit spread of about 0.13, so without it the head first learns from the table alone (what that
costs on the reviews is measured in docs/text-and-fusion.md).
With one branch nothing is added, so a tabular-only model stays exactly fastai's `TabularModel`.

Three regularisers for a small table beside hundreds of embedding dimensions, each measured in
benchmarks/fusion_candidates.py (the weak-text case and the reviews; figures in docs/small-tables.md):

* ``branch_dropout`` drops units of each branch's normalised features (two or more branches only);
* ``ConcatFusion(project={"text": 16})`` projects a branch to a small width before the concatenation,
  so the head sees 16 text directions instead of 384; the projection belongs to the ``fusion`` part,
  which holds nothing else but the branches' LayerNorms, so that part's ``weight_decay``
  (``model.parts.fusion``) is a decay for the text side;
* ``GatedFusion(gate_bias={"tabular": 2, "text": -2})`` starts each branch's gate open or nearly shut
  (sigmoid(2) = 0.88, sigmoid(-2) = 0.12), so the text must earn its weight.

Late fusion of per-branch linear heads (one logit per branch, summed) is what `ConcatFusion` with
the default linear head already computes: a linear layer over a concatenation is the sum of one
linear layer per part.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmtab.errors import ConfigError

WIDTH = 128  # the one default width of a fusion layer that projects its branches (`d`)
NORMALIZE = True  # the one default of `normalize` (see the module docstring)


class BranchNorm(nn.Module):
    """The branches' features in a fixed (name-sorted) order, each through its own LayerNorm when
    there are two or more branches (see the module docstring). Every fusion layer starts with it."""

    def __init__(self, in_features: Mapping[str, int], normalize: bool, dropout: float = 0.0) -> None:
        super().__init__()
        self.names = sorted(in_features)
        several = len(in_features) > 1
        self.norms = nn.ModuleDict({n: nn.LayerNorm(in_features[n]) for n in self.names} if normalize and several
                                   else {})
        self.dropout = nn.Dropout(dropout) if dropout > 0 and several else None

    def forward(self, features: Mapping[str, Tensor]) -> list[Tensor]:
        parts = [self.norms[n](features[n]) if self.norms else features[n] for n in self.names]
        return parts if self.dropout is None else [self.dropout(x) for x in parts]


class ConcatFusion(nn.Module):
    """Concatenate the branches' features in a fixed (name-sorted) order.

    Args:
        project: a width per branch name: that branch's features go through a Linear to that width
            before the concatenation (see the module docstring); other branches are kept whole.
    """

    def __init__(self, in_features: Mapping[str, int], normalize: bool = NORMALIZE,
                 branch_dropout: float = 0.0, project: Mapping[str, int] | None = None) -> None:
        super().__init__()
        project = dict(project or {})
        _check_branch_names("ConcatFusion: project", project, in_features)
        self.norm = BranchNorm(in_features, normalize, branch_dropout)
        self.project = nn.ModuleDict({n: nn.Linear(in_features[n], w) for n, w in sorted(project.items())})
        self.out_features = sum(project.get(n, w) for n, w in in_features.items())

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        parts = [self.project[n](x) if n in self.project else x for n, x in zip(self.norm.names, self.norm(features))]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # (B, out_features)


def _check_branch_names(what: str, given: Mapping[str, object], in_features: Mapping[str, int]) -> None:
    unknown = sorted(set(given) - set(in_features))
    if unknown:
        raise ConfigError(f"{what} names {unknown}, but this model's branches are {sorted(in_features)}")


def _projections(in_features: Mapping[str, int], d: int) -> nn.ModuleDict:
    return nn.ModuleDict({name: nn.Linear(width, d) for name, width in sorted(in_features.items())})


class GatedFusion(nn.Module):
    """Each branch projected to width `d`, weighted by its own learned gate, and summed.

    The gate of branch m is ``sigmoid(W_m [all features])`` per unit, so the model can lean on the
    text for one row and on the table for another. With one branch it is a gated projection.

    Args:
        gate_bias: a starting bias per branch name for its gate (default 0: every gate half open);
            positive opens a branch's gate, negative nearly shuts it (see the module docstring).
    """

    def __init__(self, in_features: Mapping[str, int], d: int = WIDTH, normalize: bool = NORMALIZE,
                 branch_dropout: float = 0.0, gate_bias: Mapping[str, float] | None = None) -> None:
        super().__init__()
        gate_bias = dict(gate_bias or {})
        _check_branch_names("GatedFusion: gate_bias", gate_bias, in_features)
        self.norm = BranchNorm(in_features, normalize, branch_dropout)
        total = sum(in_features.values())
        self.project = _projections(in_features, d)
        self.gate = nn.ModuleDict({name: nn.Linear(total, d) for name in self.norm.names})
        for name, bias in gate_bias.items():
            nn.init.constant_(self.gate[name].bias, bias)
        self.out_features = d

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        parts = self.norm(features)
        joined = torch.cat(parts, dim=1)  # (B, sum(in_features))
        out = 0
        for name, x in zip(self.norm.names, parts):
            out = out + torch.sigmoid(self.gate[name](joined)) * self.project[name](x)  # (B, d)
        return out


class AttentionFusion(nn.Module):
    """Each branch becomes one token of width `d` (plus a learned modality embedding); a transformer
    layer lets the tokens attend to each other; the attended tokens are concatenated."""

    def __init__(self, in_features: Mapping[str, int], d: int = WIDTH, heads: int = 4, dropout: float = 0.1,
                 normalize: bool = NORMALIZE, branch_dropout: float = 0.0) -> None:
        super().__init__()
        if d % heads:
            raise ConfigError(f"AttentionFusion: d={d} must be divisible by heads={heads}")
        self.norm = BranchNorm(in_features, normalize, branch_dropout)
        self.project = _projections(in_features, d)
        self.modality = nn.Parameter(torch.zeros(len(in_features), d))
        nn.init.normal_(self.modality, std=0.02)
        self.layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=dropout, batch_first=True)
        self.out_features = d * len(in_features)

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        parts = self.norm(features)
        tokens = torch.stack([self.project[n](x) for n, x in zip(self.norm.names, parts)], dim=1)  # (B, M, d)
        return self.layer(tokens + self.modality).flatten(1)  # (B, M * d)
