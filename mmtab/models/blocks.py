"""The Linear-ReLU-BatchNorm-Dropout block and the stack of them that the tabular branch and the
fusion head share.

NOTE: the order inside a block is fastai's ``LinBnDrop(lin_first=True)`` as used by its
``TabularModel``: Linear (no bias when BatchNorm follows) -> ReLU -> BatchNorm -> Dropout.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mmtab.errors import ConfigError


class LinBnDrop(nn.Sequential):
    """``linear -> act -> bn -> drop``, with stable submodule names for param groups and freezing."""

    def __init__(self, in_features: int, out_features: int, *, bn: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=not bn)
        self.act = nn.ReLU(inplace=True)
        if bn:
            self.bn = nn.BatchNorm1d(out_features)
        if dropout > 0:
            self.drop = nn.Dropout(dropout)


class MLP(nn.Module):
    """A stack of `LinBnDrop` blocks; ``out_features`` is the last block's width (or the input's)."""

    def __init__(self, in_features: int, layers: Sequence[int], *, dropout: float | Sequence[float],
                 bn: bool) -> None:
        super().__init__()
        dropouts = [dropout] * len(layers) if isinstance(dropout, (int, float)) else list(dropout)
        if len(dropouts) != len(layers):
            raise ConfigError(f"dropout has {len(dropouts)} values for {len(layers)} layers {list(layers)}: "
                             "give one value or one per layer")
        sizes = [in_features, *layers]
        self.blocks = nn.Sequential(*(LinBnDrop(sizes[i], sizes[i + 1], bn=bn, dropout=dropouts[i])
                                      for i in range(len(layers))))
        self.out_features = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
