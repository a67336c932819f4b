"""The exact weighted mean ``sum(w_i * l_i) / sum(w_i)`` of per-sample losses.

Per-sample losses come from the task (`mmtab.tasks.Task.loss`) and are kept unweighted, so they
answer "which rows does the model get most wrong"; sample weights and class weights enter only the
mean that is optimised.
"""

from __future__ import annotations

import torch
from torch import Tensor


def loss_weights(target: Tensor, sample_weight: Tensor | None, class_weights: Tensor | None) -> Tensor | None:
    """The weight each row carries in the mean: its sample weight times its class's weight.

    With sample weights all 1 this equals PyTorch's ``cross_entropy(weight=class_weights)`` mean.
    """
    w = sample_weight
    if class_weights is not None:
        cw = class_weights[target]
        w = cw if w is None else w * cw
    return w


def weighted_mean(losses: Tensor, weights: Tensor | None) -> Tensor:
    """``sum(w * l) / sum(w)``; a batch whose weights are all zero contributes a zero loss."""
    if weights is None:
        return losses.mean()
    return (weights * losses).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)
