"""Probabilities you can trust: temperature scaling (Guo et al. 2017), its measures and its plot.

One number, the temperature T, divides every logit of a classifier (``softmax(z / T)``; for the
ordinal task the logits of its chain, ``sigmoid(z_k / T)``) and is fitted to minimise the weighted
log loss on the validation rows. Dividing all logits by one positive number keeps their order, so
the most probable class never changes for binary and multiclass targets; the ordinal task's median
class can, so its prediction is kept from the uncalibrated chain (`mmtab.training.module`).

The fit is a golden-section search over log(1/T): the log loss is convex in 1/T (a log-sum-exp of
linear functions minus a linear one), so it has one minimum, and every evaluation is one sum that
several processes can add up (`loss_at`), so each process finds the same T.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from mmtab.tasks import Task

CALIBRATION_KEY = "mmtab_calibration"  # where a checkpoint keeps its temperature and its measures
BINS = 15  # confidence bins of the expected calibration error and the reliability diagram
LOG_BETA = (-4.0, 4.0)  # the search interval of log(1/T): T from 1/55 to 55
STEPS = 40  # golden-section steps: the interval shrinks 0.618^40, far below any digit that matters


def fit_temperature(loss_at: Callable[[float], float]) -> float:
    """The temperature minimising `loss_at(T)` (the weighted mean log loss with logits divided by T)."""
    lo, hi = LOG_BETA
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = loss_at(math.exp(-a)), loss_at(math.exp(-b))
    for _ in range(STEPS):
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = loss_at(math.exp(-a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = loss_at(math.exp(-b))
    return math.exp(-(lo + hi) / 2)


def expected_calibration_error(probabilities: Tensor, target: Tensor, bins: int = BINS) -> float:
    """Top-label ECE: the rows binned by their highest probability, the gap between each bin's mean
    confidence and its accuracy, weighted by the bin's share of rows (torchmetrics')."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    return float(multiclass_calibration_error(probabilities.float(), target.long(), num_classes=probabilities.shape[1],
                                              n_bins=bins, norm="l1"))


def reliability(probabilities: Tensor, target: Tensor, bins: int = BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin: (mean confidence, accuracy, rows), nan where a bin is empty."""
    confidence, predicted = probabilities.float().max(dim=1)
    correct = (predicted == target).float()
    index = torch.clamp((confidence * bins).long(), max=bins - 1)
    rows = torch.bincount(index, minlength=bins).double()
    conf = torch.bincount(index, weights=confidence.double(), minlength=bins) / rows
    acc = torch.bincount(index, weights=correct.double(), minlength=bins) / rows
    return conf.numpy(), acc.numpy(), rows.numpy()


def calibrate(task: Task, output: Tensor, target: Tensor, weights: Tensor | None, *, temperature: float | None = None,
              world_sum: Callable[[Tensor], Tensor] | None = None) -> dict[str, Any]:
    """The temperature of raw `output` (fitted, unless given) with the weighted log loss and the ECE
    before and after it. `world_sum` adds a tensor up over processes: each then fits the same T (the
    ECE is measured on this process's rows)."""
    w = torch.ones_like(target, dtype=torch.float32) if weights is None else weights.float()

    def loss_at(t: float) -> float:
        sums = torch.stack([(w * task.loss(output / t, target)).sum(), w.sum()]).double()
        if world_sum is not None:
            sums = world_sum(sums)
        return float(sums[0] / sums[1].clamp_min(1e-12))

    t = fit_temperature(loss_at) if temperature is None else temperature
    return {"temperature": t, "log_loss_before": loss_at(1.0), "log_loss_after": loss_at(t),
            "ece_before": expected_calibration_error(task.activate(output), target),
            "ece_after": expected_calibration_error(task.activate(output / t), target)}
