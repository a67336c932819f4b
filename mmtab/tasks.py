"""What a kind of target means, decided once: one object per task.

A task knows how a target column becomes training targets, how the model's outputs become a loss,
metrics, probabilities or values, and which prediction columns a user gets. The rest of mmtab asks
the task object and never compares task names, so a new kind of target (ordinal, multilabel) is one
new class here and one entry in `TASKS`.

Example:
    >>> task = get_task("multiclass")
    >>> task.n_outputs(n_classes=3), task.classification
    (3, True)
    >>> task.loss(torch.zeros(2, 3), torch.tensor([0, 2])).shape  # (B, n_outputs), (B,) -> (B,)
    torch.Size([2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from mmtab.data.columns import first_values
from mmtab.errors import ConfigError

TaskName = Literal["binary", "multiclass", "regression"]


class Task:
    """The interface every task keeps. Subclasses are stateless: the fitted classes live in the
    preprocessor and are passed in where a task needs them."""

    name: ClassVar[str]
    classification: ClassVar[bool]

    def n_outputs(self, n_classes: int) -> int:
        raise NotImplementedError

    def class_problems(self, classes: Sequence[Any], target: str) -> list[str]:
        """Problems with the classes found in the training rows (none for regression)."""
        return []

    def encode_target(self, values: pd.Series, classes: Sequence[Any]) -> tuple[Tensor, list[str]]:
        """(training targets, problems: values that cannot be encoded, named with their rows)."""
        raise NotImplementedError

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """(B, n_outputs), (B,) -> (B,) per-sample loss, unweighted."""
        raise NotImplementedError

    def metrics(self, n_outputs: int) -> MetricCollection:
        raise NotImplementedError

    def activate(self, output: Tensor) -> Tensor:
        """Raw outputs -> what a user reads: class probabilities (B, C), or values (B,)."""
        raise NotImplementedError

    def metric_inputs(self, output: Tensor) -> Tensor:
        """Raw outputs -> what this task's metrics take."""
        return self.activate(output)

    def prediction_columns(self, activated: np.ndarray, classes: Sequence[Any]) -> dict[str, np.ndarray]:
        """Activated outputs -> the columns ``predict`` writes beside the rows."""
        raise NotImplementedError


class _Classification(Task):
    classification = True

    def n_outputs(self, n_classes: int) -> int:
        return n_classes

    def encode_target(self, values: pd.Series, classes: Sequence[Any]) -> tuple[Tensor, list[str]]:
        codes = pd.Categorical(values, categories=list(classes)).codes
        bad = values[codes < 0]
        problems = [f"target column {values.name!r} has values not seen in the training rows "
                    f"({first_values(bad)}); known classes: {list(classes)}"] if len(bad) else []
        return torch.from_numpy(codes.astype(np.int64)), problems

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target, reduction="none")

    def activate(self, output: Tensor) -> Tensor:
        return torch.softmax(output.float(), dim=1)

    def prediction_columns(self, activated: np.ndarray, classes: Sequence[Any]) -> dict[str, np.ndarray]:
        columns = {"prediction": np.asarray(classes, dtype=object)[activated.argmax(axis=1)]}
        columns.update({f"prob_{cls}": activated[:, k] for k, cls in enumerate(classes)})
        return columns


class BinaryTask(_Classification):
    """Two classes: cross-entropy over two logits; accuracy, AUROC and F1 of the second class."""

    name = "binary"

    def class_problems(self, classes: Sequence[Any], target: str) -> list[str]:
        if len(classes) == 2:
            return []
        return [f"target {target!r} has {len(classes)} classes in the training rows ({list(classes)[:5]}), "
                "a binary task needs 2: set data.task: multiclass or check the split"]

    def metrics(self, n_outputs: int) -> MetricCollection:
        return MetricCollection({"accuracy": BinaryAccuracy(), "auroc": BinaryAUROC(), "f1": BinaryF1Score()})

    def metric_inputs(self, output: Tensor) -> Tensor:
        return self.activate(output)[:, 1]  # P(second class)


class MulticlassTask(_Classification):
    """Three or more classes: cross-entropy; accuracy (micro), AUROC and F1 (both macro-averaged)."""

    name = "multiclass"

    def class_problems(self, classes: Sequence[Any], target: str) -> list[str]:
        if len(classes) >= 2:
            return []
        return [f"target {target!r} has {len(classes)} class in the training rows: a model needs at least 2"]

    def metrics(self, n_outputs: int) -> MetricCollection:
        return MetricCollection({"accuracy": MulticlassAccuracy(n_outputs, average="micro"),
                                 "auroc": MulticlassAUROC(n_outputs), "f1": MulticlassF1Score(n_outputs)})


class RegressionTask(Task):
    """One value per row: squared error; MAE, RMSE and R²."""

    name = "regression"
    classification = False

    def n_outputs(self, n_classes: int) -> int:
        return 1

    def encode_target(self, values: pd.Series, classes: Sequence[Any]) -> tuple[Tensor, list[str]]:
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna() & values.notna()]
        problems = [f"target column {values.name!r} has non-numeric values ({first_values(bad)}): a regression "
                    "target must be numbers"] if len(bad) else []
        return torch.from_numpy(numbers.to_numpy(dtype=np.float32)), problems

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return (output.squeeze(-1) - target).pow(2)

    def metrics(self, n_outputs: int) -> MetricCollection:
        return MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                                 "r2": R2Score()})

    def activate(self, output: Tensor) -> Tensor:
        return output.float().squeeze(-1)

    def prediction_columns(self, activated: np.ndarray, classes: Sequence[Any]) -> dict[str, np.ndarray]:
        return {"prediction": activated}


@dataclass(frozen=True)
class TargetScaling:
    """How a regression target is presented to the model: ``z = (f(y) - mean) / std`` with ``f`` the
    identity or ``log1p``, fitted on the training rows. The model learns z (unit scale, whatever the
    target's units), and its outputs are mapped back with `decode`, so metrics, predictions and
    ``y_range`` are in the target's own units.

    Example:
        >>> s = TargetScaling.fit(np.array([100.0, 300.0]), log1p=False)
        >>> s.encode(torch.tensor([100.0, 300.0])), s.decode(torch.tensor([0.0]))
        (tensor([-1.,  1.]), tensor([200.]))
    """

    mean: float
    std: float
    log1p: bool

    @classmethod
    def fit(cls, values: np.ndarray, *, log1p: bool) -> TargetScaling:
        f = np.log1p(values) if log1p else values
        std = float(np.std(f))
        return cls(mean=float(np.mean(f)), std=std if std > 1e-12 else 1.0, log1p=log1p)

    def encode(self, y: Tensor) -> Tensor:
        return ((torch.log1p(y) if self.log1p else y) - self.mean) / self.std

    def decode(self, z: Tensor) -> Tensor:
        y = z * self.std + self.mean
        return torch.expm1(y) if self.log1p else y


TASKS: dict[str, Task] = {task.name: task for task in (BinaryTask(), MulticlassTask(), RegressionTask())}


def get_task(name: str) -> Task:
    """The task object for a name from a config (``binary``, ``multiclass``, ``regression``)."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}: use one of {sorted(TASKS)}")
    return TASKS[name]


def infer_task(target: pd.Series) -> TaskName:
    """Floats with non-integer values are regression; two levels are binary; else multiclass
    (numbers with more than 20 levels are regression)."""
    values = target.dropna()
    if pd.api.types.is_float_dtype(values) and not np.all(np.mod(values.to_numpy(), 1) == 0):
        return "regression"
    n = values.nunique()
    if n == 2:
        return "binary"
    if pd.api.types.is_numeric_dtype(values) and n > 20:
        return "regression"
    return "multiclass"
