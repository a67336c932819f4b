"""How each continuous input is scaled, fitted on the training rows: the choice ``data.numeric_scaling``.

* ``standard``: ``(x - mean) / std``, fastai's ``Normalize`` (the default).
* ``quantile``: the training rows' empirical distribution mapped onto a standard normal, as in the
  TabM and RealMLP recipes. Skewed columns (``capital-gain``: 92% zeros, then up to 99,999) become
  evenly spread; ties get the middle of their quantile range, so a column of mostly zeros does not
  scatter its zeros.
* ``robust``: ``(x - median) / IQR`` then the smooth clip ``x / sqrt(1 + (x / 3)^2)`` (RealMLP's
  "robust scale and smooth clip"): outliers are pulled in to about +-3 without a hard cut.

NOTE: written here rather than taken from scikit-learn's ``QuantileTransformer`` / ``RobustScaler``:
the fitted state must be plain numbers in the checkpoint (``torch.load(weights_only=True)``), and
scikit-learn is not a runtime dependency. Each method is a few vectorised lines over a column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

import numpy as np
import torch

from mmtab.errors import ConfigError

ScalingName = Literal["standard", "quantile", "robust"]
SCALINGS: tuple[str, ...] = get_args(ScalingName)
# Normalised numbers are clipped at this many training standard deviations: a new row's 1e300 where
# training saw values near 1 would not fit a float32 input, and nothing is learned that far out.
CLIP_STDS = 1e6
_QUANTILE_EPS = 1e-7  # the normal's tails are cut here: |z| <= 5.2
SMOOTH_CLIP = 3.0


class _Method(NamedTuple):
    """One scaling method: its fit (a column -> its numbers), transform and one-line description."""

    fit: Callable[[np.ndarray], list[float]]
    transform: Callable[[list[float], np.ndarray], np.ndarray]
    describe: Callable[[list[float]], str]


def _fit_standard(values: np.ndarray) -> list[float]:
    """``[mean, std]``."""
    mean, std = _mean_std(values)
    return [mean, std if std > 1e-8 else 1.0]


def _standard(params: list[float], values: np.ndarray) -> np.ndarray:
    mean, std = params  # x/std - mean/std: no intermediate overflows near float64's limit
    return np.clip(values / std - mean / std, -CLIP_STDS, CLIP_STDS)


def _fit_robust(values: np.ndarray) -> list[float]:
    """``[median, 1 / spread]``."""
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    spread = q75 - q25 if q75 > q25 else (values.max() - values.min()) / 2
    with np.errstate(over="ignore", divide="ignore"):  # a subnormal spread has no float inverse
        inv_spread = float(1 / spread) if spread > 0 else np.inf
    return [float(median), inv_spread if np.isfinite(inv_spread) else 1.0]


def _robust(params: list[float], values: np.ndarray) -> np.ndarray:
    median, inv_spread = params
    with np.errstate(over="ignore"):  # a huge inverse spread overflows to inf, clipped right here
        x = np.clip((values - median) * inv_spread, -CLIP_STDS, CLIP_STDS)
    return x / np.sqrt(1 + (x / SMOOTH_CLIP) ** 2)


def _fit_quantile(values: np.ndarray) -> list[float]:
    """The training quantiles at evenly spaced levels."""
    n_quantiles = int(np.clip(len(values) // 30, 10, 1000))  # TabM's and RealMLP's choice
    return np.quantile(values, np.linspace(0, 1, n_quantiles)).tolist()


def _quantile(params: list[float], values: np.ndarray) -> np.ndarray:
    # up and down interpolation averaged: a value shared by many rows lands mid-way in its range
    q = np.asarray(params)
    u = 0.5 * (_level(values, q, "right") + _level(values, q, "left"))
    u = np.clip(u, _QUANTILE_EPS, 1 - _QUANTILE_EPS)
    return torch.special.ndtri(torch.from_numpy(u)).numpy()


_METHODS = {  # one entry per ScalingName
    "standard": _Method(_fit_standard, _standard, lambda p: f"standard mean={p[0]:.4g} std={p[1]:.4g}"),
    "robust": _Method(_fit_robust, _robust,
                      lambda p: f"robust median={p[0]:.4g} iqr={1 / p[1]:.4g}, smooth clip at +-{SMOOTH_CLIP:g}"),
    "quantile": _Method(_fit_quantile, _quantile,
                        lambda p: f"quantile-normal over {len(p)} training quantiles ({p[0]:.4g} .. {p[-1]:.4g})"),
}


@dataclass
class ColumnScaling:
    """One column's fitted scaling: its method's name and fitted numbers (plain values, saved in checkpoints)."""

    method: ScalingName
    params: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, method: ScalingName, values: np.ndarray) -> ColumnScaling:
        """`values`: one column of the training rows, float64, already filled (no NaN)."""
        return cls(method, _METHODS[method].fit(values))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return _METHODS[self.method].transform(self.params, values)

    def describe(self) -> str:
        return _METHODS[self.method].describe(self.params)


def methods_by_column(numeric_scaling: ScalingName | dict[str, list[str]], continuous: list[str]) -> dict[str, str]:
    """``data.numeric_scaling`` -> the method of each continuous column.

    A name applies to every column; a mapping from method to columns chooses per column set, and
    columns it does not name are ``standard``.
    """
    if isinstance(numeric_scaling, str):
        if numeric_scaling not in SCALINGS:
            raise ConfigError(f"data.numeric_scaling: unknown method {numeric_scaling!r}; choose one of {SCALINGS}")
        return dict.fromkeys(continuous, numeric_scaling)
    given: dict[str, str] = {}
    problems = []
    for method, cols in numeric_scaling.items():
        if method not in SCALINGS:
            problems.append(f"unknown method {method!r} (choose one of {SCALINGS})")
            continue
        for col in cols:
            if col not in continuous:
                problems.append(f"{method}: {col!r} is not one of data.continuous_cols")
            elif given.setdefault(col, method) != method:
                problems.append(f"{col!r} is given two methods ({given[col]}, {method})")
    if problems:
        raise ConfigError("data.numeric_scaling: " + "; ".join(problems))
    return {col: given.get(col, "standard") for col in continuous}


def _level(values: np.ndarray, q: np.ndarray, side: Literal["left", "right"]) -> np.ndarray:
    """Where each value falls among the sorted training quantiles ``q``, as a level in [0, 1].

    ``side="right"`` puts a value equal to a run of tied quantiles at the run's last level, "left" at
    its first. NOTE: not ``np.interp``, which takes the slope ``1 / (q[i+1] - q[i])`` first and
    returns NaN where two quantiles differ by a subnormal amount; the fraction here is taken inside
    its interval, where it cannot leave [0, 1].
    """
    n = len(q)
    if n == 1:
        return np.full(values.shape, 0.5)
    step = 1.0 / (n - 1)
    if side == "right":  # q[i] <= x < q[i + 1]
        i = np.clip(np.searchsorted(q, values, side="right") - 1, 0, n - 2)
    else:  # q[i] < x <= q[i + 1]
        i = np.clip(np.searchsorted(q, values, side="left") - 1, 0, n - 2)
    low, high = q[i], q[i + 1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        fraction = (values / 2 - low / 2) / (high / 2 - low / 2)  # halves: no overflow near float64's limit
    fraction = np.clip(np.nan_to_num(fraction, nan=1.0 if side == "right" else 0.0), 0.0, 1.0)
    return (i + fraction) * step


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation computed on the column scaled to at most 1 in magnitude, so that
    sums of values near float64's limit (1.8e308) do not overflow."""
    scale = float(np.abs(values).max()) if len(values) else 0.0
    scale = scale if scale > 0 else 1.0
    scaled = values / scale
    return float(scaled.mean() * scale), float(scaled.std() * scale)
