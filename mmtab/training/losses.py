"""The exact weighted mean ``sum(w_i * l_i) / sum(w_i)`` of per-sample losses.

Per-sample losses come from the task (`mmtab.tasks.Task.loss`) and are kept unweighted, so they
answer "which rows does the model get most wrong"; sample weights and class weights enter only the
mean that is optimised.
"""

from __future__ import annotations

from collections.abc import Callable

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


def weighted_mean(losses: Tensor, weights: Tensor | None, *, world_sum: Callable[[Tensor], Tensor] | None = None,
                  world_size: int = 1) -> Tensor:
    """``sum(w * l) / sum(w)``; a batch whose weights are all zero contributes a zero loss.

    Under data parallelism each process holds part of the batch and the gradients are averaged over
    the `world_size` processes. With `world_sum` (a sum over processes) the denominator is the whole
    batch's ``sum(w)`` divided by `world_size`, so the averaged gradient is exactly that of the whole
    batch's weighted mean, whatever each process's share of the weight (a mean of per-process means
    would not be).
    """
    if world_sum is None:
        if weights is None:
            return losses.mean()
        return (weights * losses).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)
    w = torch.ones_like(losses) if weights is None else weights
    total = world_sum(w.sum().detach().float()) / world_size
    return (w * losses).sum() / total.clamp_min(torch.finfo(losses.dtype).tiny)
