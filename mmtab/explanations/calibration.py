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

import numpy as np
import torch
from torch import Tensor

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
