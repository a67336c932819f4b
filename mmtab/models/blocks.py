"""The Linear-activation-BatchNorm-Dropout block and the stack of them that the tabular branch and
the fusion head share, and `GeneralRelu`.

NOTE: the order inside a block is fastai's ``LinBnDrop(lin_first=True)`` as used by its
``TabularModel``: Linear (no bias when BatchNorm follows) -> ReLU -> BatchNorm -> Dropout. The
activation is ReLU unless another is given (``activation``), e.g. `GeneralRelu`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch  # noqa: F401 -- the doctest's tensors
import torch.nn.functional as F
from torch import Tensor, nn

from mmtab.errors import ConfigError

ActivationFactory = Callable[[], nn.Module]


class GeneralRelu(nn.Module):
    """A ReLU with a leak, shifted down by `sub` and capped at `max_value` (fastai's course ``GeneralRelu``).

    Subtracting about 0.4 after a ReLU brings the output's mean near 0, which a plain ReLU can never
    reach; a leak keeps units from going dormant. With the defaults it is a plain ReLU.

    Example:
        >>> GeneralRelu(leak=0.1, sub=0.4)(torch.tensor([-1.0, 0.0, 2.0]))
        tensor([-0.5000, -0.4000,  1.6000])
    """

    def __init__(self, leak: float = 0.0, sub: float = 0.0, max_value: float | None = None) -> None:
        super().__init__()
        self.leak, self.sub, self.max_value = leak, sub, max_value

    def forward(self, x: Tensor) -> Tensor:
        x = F.leaky_relu(x, self.leak) if self.leak else F.relu(x)
        if self.sub:
            x = x - self.sub
        return x.clamp_max(self.max_value) if self.max_value is not None else x

    def extra_repr(self) -> str:
        return f"leak={self.leak}, sub={self.sub}, max_value={self.max_value}"


class LinBnDrop(nn.Sequential):
    """``linear -> act -> bn -> drop``, with stable submodule names for param groups and freezing."""

    def __init__(self, in_features: int, out_features: int, *, bn: bool, dropout: float,
                 activation: ActivationFactory | None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=not bn)
        self.act = activation() if activation is not None else nn.ReLU(inplace=True)
        if bn:
            self.bn = nn.BatchNorm1d(out_features)
        if dropout > 0:
            self.drop = nn.Dropout(dropout)


class MLP(nn.Module):
    """A stack of `LinBnDrop` blocks; ``out_features`` is the last block's width (or the input's)."""

    def __init__(self, in_features: int, layers: Sequence[int], *, dropout: float | Sequence[float],
                 bn: bool, activation: ActivationFactory | None) -> None:
        super().__init__()
        dropouts = [dropout] * len(layers) if isinstance(dropout, (int, float)) else list(dropout)
        if len(dropouts) != len(layers):
            raise ConfigError(f"dropout has {len(dropouts)} values for {len(layers)} layers {list(layers)}: "
                             "give one value or one per layer")
        sizes = [in_features, *layers]
        self.blocks = nn.Sequential(*(LinBnDrop(sizes[i], sizes[i + 1], bn=bn, dropout=dropouts[i],
                                                activation=activation)
                                      for i in range(len(layers))))
        self.out_features = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
