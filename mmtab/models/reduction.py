"""`TextReduction`: a text branch's pooled vectors, L2-normalised and projected on their principal
components, as MulTaBench reduces its target-aware representations (each text's vector to 30
numbers by default).

Why reduce at all: on a few thousand rows, a head handed 384 generic dimensions either ignores them
or fits their noise; 30 components of vectors that an adapter pulled toward the target keep what
the target needs in a width the head can learn from those rows. The components are fitted once, on
the training rows (`fit`), and kept as buffers: a checkpoint holds them, so ``predict`` projects new
rows exactly as the training rows were.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Pca:
    """The principal components of a set of vectors: ``(x - mean) @ components.T``."""

    mean: Tensor  # (width,)
    components: Tensor  # (dim, width), the first of largest variance; signs fixed (largest entry positive)

    @classmethod
    def fit(cls, x: Tensor, dim: int) -> Pca:
        x = x.double()
        mean = x.mean(dim=0)
        _, _, vt = torch.linalg.svd(x - mean, full_matrices=False)
        components = vt[:dim]
        if len(components) < dim:  # fewer rows than dimensions: the missing components are zero
            components = torch.cat([components, components.new_zeros(dim - len(components), x.shape[1])])
        signs = torch.sign(components.gather(1, components.abs().argmax(dim=1, keepdim=True)))
        signs[signs == 0] = 1.0
        return cls(mean=mean, components=components * signs)  # a deterministic sign, as scikit-learn's svd_flip

    def transform(self, x: Tensor) -> Tensor:
        return ((x.double() - self.mean) @ self.components.T).float()


class TextReduction(nn.Module):
    """(B, slots x width) pooled vectors -> (B, slots x dim): each slot's (text column's) vector
    L2-normalised, then projected on that slot's principal components of the training rows.

    Until `fit` is called it has no components (`fitted` is false) and a forward is an error: a
    trainer fits it on the training rows before the first step (`MultimodalModule` does at fit start).
    """

    def __init__(self, slots: int, width: int, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"a text reduction needs 1 or more dimensions, got {dim}")
        self.slots, self.width, self.dim = slots, width, dim
        self.register_buffer("mean", torch.zeros(slots, width))
        self.register_buffer("components", torch.zeros(slots, dim, width))
        self.register_buffer("fitted", torch.tensor(False))  # travels with the components in a state dict

    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @property
    def out_features(self) -> int:
        return self.slots * self.dim

    def normalise(self, pooled: Tensor) -> Tensor:
        """(B, slots x width) -> (B, slots, width), each slot's vector of unit length."""
        return F.normalize(pooled.view(len(pooled), self.slots, self.width).float(), dim=-1)

    @torch.no_grad()
    def fit(self, pooled: Tensor) -> None:
        """Fit each slot's components on these (training) rows' pooled vectors, (N, slots x width)."""
        x = self.normalise(pooled.cpu())
        for s in range(self.slots):
            pca = Pca.fit(x[:, s], self.dim)
            self.mean[s] = pca.mean.to(self.mean)
            self.components[s] = pca.components.to(self.components)
        self.fitted.fill_(True)

    def forward(self, pooled: Tensor) -> Tensor:
        if not self.is_fitted():
            raise RuntimeError("this text reduction has not been fitted: call fit on the training rows' pooled "
                               "vectors first (MultimodalModule does when fitting starts)")
        x = self.normalise(pooled) - self.mean  # (B, slots, width)
        return torch.einsum("bsw,sdw->bsd", x, self.components).flatten(1)
