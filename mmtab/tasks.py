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
    BinaryCohenKappa,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCohenKappa,
    MulticlassF1Score,
)

from mmtab.errors import ConfigError, first_values

TaskName = Literal["binary", "multiclass", "ordinal", "regression"]


class Task:
    """The interface every task keeps. Subclasses are stateless: the fitted classes live in the
    preprocessor and are passed in where a task needs them."""

    name: ClassVar[str]
    classification: ClassVar[bool]
    # The metric a person judges this task by first (higher is better): the modality report leads with
    # it and column importance is the drop in it.
    main_metric: ClassVar[str]

    def n_outputs(self, n_classes: int) -> int:
        raise NotImplementedError

    def n_classes(self, n_outputs: int) -> int:
        """How many classes a model with `n_outputs` outputs tells apart (0 for regression)."""
        return n_outputs if self.classification else 0

    def constant_output(self, target: Tensor, n_outputs: int) -> Tensor:
        """(1, n_outputs): the best prediction that ignores the inputs, learned from these targets (the
        baseline a model must beat: its loss is what the target alone costs)."""
        raise NotImplementedError

    def class_problems(self, classes: Sequence[Any], target: str) -> list[str]:
        """Problems with the classes found in the training rows (none for regression)."""
        return []

    def encode_target(self, values: pd.Series, classes: Sequence[Any]) -> tuple[Tensor, list[str]]:
        """(training targets, problems: values that cannot be encoded, named with their rows)."""
        raise NotImplementedError

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """(B, n_outputs), (B,) -> (B,) per-sample loss, unweighted.

        An ensemble's outputs (B, k, n_outputs) give each row the mean of its k members' losses:
        every member is trained as a model of its own (TabM), not their average as one model.
        """
        if output.ndim == 3:
            rows, k = output.shape[:2]
            return self._loss(output.flatten(0, 1), target.repeat_interleave(k)).view(rows, k).mean(dim=1)
        return self._loss(output, target)

    def _loss(self, output: Tensor, target: Tensor) -> Tensor:
        """One model's outputs (B, n_outputs), (B,) -> (B,)."""
        raise NotImplementedError

    def metrics(self, n_outputs: int, ordered: bool = False) -> MetricCollection:
        """The task's metrics; `ordered` (the classes are ordered, in their sorted order) adds the
        quadratic weighted kappa (``qwk``) of the predicted classes."""
        raise NotImplementedError

    def undefined_metrics(self, class_counts: Sequence[int]) -> list[str]:
        """The metrics (names as `metrics` gives them) that rows with these counts per class cannot
        define: an AUROC with one class present, a macro average over a class that is absent. Such a
        metric is reported as undefined (nan), never as the 0 its formula falls back to."""
        return []

    def _unordered(self, ordered: bool) -> None:
        if ordered:
            raise ConfigError(f"model.ordered_classes: a {self.name} target has no classes to order; it is for "
                              "binary and multiclass targets (an ordinal target reports qwk always)")

    def activate(self, output: Tensor) -> Tensor:
        """Raw outputs -> what a user reads: class probabilities (B, C), or values (B,).

        An ensemble's (B, k, n_outputs) give the mean of its members' probabilities (or values).
        """
        if output.ndim == 3:
            rows, k = output.shape[:2]
            members = self._activate(output.flatten(0, 1))  # (B * k, C) or (B * k,)
            return members.view(rows, k, *members.shape[1:]).mean(dim=1)
        return self._activate(output)

    def _activate(self, output: Tensor) -> Tensor:
        """One model's outputs (B, n_outputs) -> (B, C) or (B,)."""
        raise NotImplementedError

    def metric_inputs(self, output: Tensor) -> Tensor:
        """Raw outputs -> what this task's metrics take."""
        return self.activate(output)

    def prediction_columns(self, activated: np.ndarray, classes: Sequence[Any],
                           predicted: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Activated outputs -> the columns ``predict`` writes beside the rows; `predicted`, the class
        indices to name, where they come from other outputs than `activated` (calibration)."""
        raise NotImplementedError


class _Classification(Task):
    classification = True

    def n_outputs(self, n_classes: int) -> int:
        return n_classes

    def constant_output(self, target: Tensor, n_outputs: int) -> Tensor:
        counts = torch.bincount(target.long(), minlength=n_outputs).double() + 0.5  # the class shares, smoothed
        return counts.log().float().view(1, -1)

    def class_problems(self, classes: Sequence[Any], target: str) -> list[str]:
        if len(classes) >= 2:
            return []
        return [f"target {target!r} has {len(classes)} class in the training rows: a model needs at least 2"]

    def predicted_class(self, probabilities: np.ndarray) -> np.ndarray:
        """(B, C) class probabilities -> (B,) the index of the class ``predict`` names."""
        return probabilities.argmax(axis=1)

    def encode_target(self, values: pd.Series, classes: Sequence[Any]) -> tuple[Tensor, list[str]]:
        codes = pd.Categorical(values, categories=list(classes)).codes
        bad = values[codes < 0]
        problems = [f"target column {values.name!r} has values not seen in the training rows "
                    f"({first_values(bad)}); known classes: {list(classes)}"] if len(bad) else []
        return torch.from_numpy(codes.astype(np.int64)), problems

    def _loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target, reduction="none")

    def _activate(self, output: Tensor) -> Tensor:
        return torch.softmax(output.float(), dim=1)

    def prediction_columns(self, activated: np.ndarray, classes: Sequence[Any],
                           predicted: np.ndarray | None = None) -> dict[str, np.ndarray]:
        index = self.predicted_class(activated) if predicted is None else predicted
        columns = {"prediction": np.asarray(classes, dtype=object)[index]}
        columns.update({f"prob_{cls}": activated[:, k] for k, cls in enumerate(classes)})
        return columns


def _absent_class_metrics(class_counts: Sequence[int], every_class: tuple[str, ...]) -> list[str]:
    """`every_class`: the metrics that need each class present; ``qwk`` needs two classes."""
    present = sum(1 for count in class_counts if count > 0)
    undefined = list(every_class) if present < len(class_counts) else []
    return undefined + (["qwk"] if present < 2 else [])


class BinaryTask(_Classification):
    """Two classes: cross-entropy over two logits; accuracy, AUROC and F1 of the second class."""

    name = "binary"
    main_metric = "auroc"

    def class_problems(self, classes: Sequence[Any], target: str) -> list[str]:
        if len(classes) == 2:
            return []
        return [f"target {target!r} has {len(classes)} classes in the training rows ({list(classes)[:5]}), "
                "a binary task needs 2: set data.task: multiclass or check the split"]

    def metrics(self, n_outputs: int, ordered: bool = False) -> MetricCollection:
        # two ordered classes: the quadratic weights are the plain ones, so qwk is Cohen's kappa
        ordered_metrics = {"qwk": BinaryCohenKappa()} if ordered else {}
        return MetricCollection({**ordered_metrics, "accuracy": BinaryAccuracy(), "auroc": BinaryAUROC(),
                                 "f1": BinaryF1Score()})

    def metric_inputs(self, output: Tensor) -> Tensor:
        return self.activate(output)[:, 1]  # P(second class)

    def undefined_metrics(self, class_counts: Sequence[int]) -> list[str]:
        # F1 of the second class is defined without first-class rows (precision and recall are)
        needs_second = ["f1"] if class_counts[1] == 0 else []
        return _absent_class_metrics(class_counts, ("auroc",)) + needs_second


class MulticlassTask(_Classification):
    """Three or more classes: cross-entropy; accuracy (micro), AUROC and F1 (both macro-averaged); with
    ordered classes (``model.ordered_classes``) also the quadratic weighted kappa of the most probable
    class (``qwk``), as the ordinal task reports it, so the two can be compared on one table."""

    name = "multiclass"
    main_metric = "auroc"

    def metrics(self, n_outputs: int, ordered: bool = False) -> MetricCollection:
        ordered_metrics = {"qwk": MulticlassCohenKappa(n_outputs, weights="quadratic")} if ordered else {}
        return MetricCollection({**ordered_metrics, "accuracy": MulticlassAccuracy(n_outputs, average="micro"),
                                 "auroc": MulticlassAUROC(n_outputs), "f1": MulticlassF1Score(n_outputs)})

    def undefined_metrics(self, class_counts: Sequence[int]) -> list[str]:
        return _absent_class_metrics(class_counts, ("auroc", "f1"))


class OrdinalTask(_Classification):
    """Ordered classes (a 1-5 rating, an adoption speed 0-4), learned with CORN (Shi, Cao and
    Raschka, 2021): K-1 outputs, output k the logit of P(y > k | y > k-1). The class probabilities
    are the chain's products, so P(y > k) falls with k whatever the weights (no crossing
    thresholds), and a row's loss is exactly the negative log-likelihood of its class under them.
    The prediction is the median class (the first k with P(y > k) < 1/2), which minimises the
    expected absolute error in class steps. Metrics: quadratic weighted kappa (``qwk``), accuracy and
    ``mae`` in class steps. The classes' order is their sorted order (numbers, or names that sort
    in order).
    """

    name = "ordinal"
    main_metric = "qwk"

    def n_outputs(self, n_classes: int) -> int:
        return n_classes - 1

    def n_classes(self, n_outputs: int) -> int:
        return n_outputs + 1

    def constant_output(self, target: Tensor, n_outputs: int) -> Tensor:
        k = torch.arange(n_outputs)
        beyond = (target.view(-1, 1) > k).sum(dim=0).double() + 0.5  # rows past class k
        at = (target.view(-1, 1) == k).sum(dim=0).double() + 0.5  # rows that stop at k
        return (beyond.log() - at.log()).float().view(1, -1)  # the logit of P(y > k | y > k-1)

    def _loss(self, output: Tensor, target: Tensor) -> Tensor:
        k = torch.arange(output.shape[1], device=output.device)  # (K-1,)
        active = target.unsqueeze(1) >= k  # task k is conditioned on y > k-1
        passed = (target.unsqueeze(1) > k).to(output.dtype)
        bce = F.binary_cross_entropy_with_logits(output, passed, reduction="none")
        return (bce * active).sum(dim=1)

    def _activate(self, output: Tensor) -> Tensor:
        # In logs, P(y = k) = log P(y > k-1) + log(1 - p_k): no difference of near-equal numbers, so a
        # class's small probability keeps its digits.
        logits = output.float()
        log_above = torch.cumsum(F.logsigmoid(logits), dim=1)  # (B, K-1): log P(y > k)
        log_reached = torch.cat([torch.zeros_like(log_above[:, :1]), log_above], dim=1)  # log P(y > k-1)
        log_stop = torch.cat([F.logsigmoid(-logits), torch.zeros_like(logits[:, :1])], dim=1)
        return torch.exp(log_reached + log_stop)  # (B, K)

    def metric_inputs(self, output: Tensor) -> Tensor:
        return self.median(self.activate(output))

    @staticmethod
    def median(probabilities: Tensor | np.ndarray) -> Tensor:
        """(B, K) class probabilities -> (B,) the median class."""
        p = torch.as_tensor(probabilities)
        above = 1 - torch.cumsum(p, dim=1)[:, :-1]  # P(y > k)
        return (above >= 0.5).sum(dim=1)

    def metrics(self, n_outputs: int, ordered: bool = False) -> MetricCollection:
        n_classes = self.n_classes(n_outputs)
        return MetricCollection({"qwk": MulticlassCohenKappa(n_classes, weights="quadratic"),
                                 "accuracy": MulticlassAccuracy(n_classes, average="micro"),
                                 "mae": _ClassStepError()})

    def predicted_class(self, probabilities: np.ndarray) -> np.ndarray:
        return self.median(probabilities).numpy()

    def undefined_metrics(self, class_counts: Sequence[int]) -> list[str]:
        return _absent_class_metrics(class_counts, ())


class _ClassStepError(MeanAbsoluteError):
    """Mean absolute error between class indices (how many steps off), from integer predictions."""

    def update(self, preds: Tensor, target: Tensor) -> None:
        super().update(preds.float(), target.float())


class RegressionTask(Task):
    """One value per row: squared error; MAE, RMSE and R²."""

    name = "regression"
    classification = False
    main_metric = "r2"

    def n_outputs(self, n_classes: int) -> int:
        return 1

    def constant_output(self, target: Tensor, n_outputs: int) -> Tensor:
        return target.float().mean().view(1, 1)

    def encode_target(self, values: pd.Series, classes: Sequence[Any]) -> tuple[Tensor, list[str]]:
        numbers = pd.to_numeric(values, errors="coerce")
        bad = values[numbers.isna() & values.notna()]
        problems = [f"target column {values.name!r} has non-numeric values ({first_values(bad)}): a regression "
                    "target must be numbers"] if len(bad) else []
        return torch.from_numpy(numbers.to_numpy(dtype=np.float32)), problems

    def _loss(self, output: Tensor, target: Tensor) -> Tensor:
        return (output.squeeze(-1) - target).pow(2)

    def metrics(self, n_outputs: int, ordered: bool = False) -> MetricCollection:
        self._unordered(ordered)
        return MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False),
                                 "r2": R2Score()})

    def _activate(self, output: Tensor) -> Tensor:
        return output.float().squeeze(-1)

    def prediction_columns(self, activated: np.ndarray, classes: Sequence[Any],
                           predicted: np.ndarray | None = None) -> dict[str, np.ndarray]:
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
    positive: bool = False  # every training target was at least 0 (a price, a count): see `negative_note`

    @classmethod
    def fit(cls, values: np.ndarray, *, log1p: bool) -> TargetScaling:
        f = np.log1p(values) if log1p else values
        std = float(np.std(f))
        return cls(mean=float(np.mean(f)), std=std if std > 1e-12 else 1.0, log1p=log1p,
                   positive=bool(len(values)) and bool(np.min(values) >= 0))

    def negative_note(self, predictions: np.ndarray) -> str:
        """A warning where a target that was never negative in training is predicted below 0 ("" if not).
        The squared-error model knows no floor; the user chooses one (log1p or y_range) or clips."""
        below = predictions < 0
        if not self.positive or not below.any():
            return ""
        return (f"mmtab: warning: {int(below.sum())} of {len(predictions)} predictions are below 0 (lowest "
                f"{float(predictions.min()):.4g}) though every training target was at least 0: clip them, or fit "
                "with data.target_transform log1p or model.net.y_range [0, HIGH] to keep predictions positive "
                "(docs/small-tables.md has what each costs)")

    def encode(self, y: Tensor) -> Tensor:
        return ((torch.log1p(y) if self.log1p else y) - self.mean) / self.std

    def decode(self, z: Tensor) -> Tensor:
        y = z * self.std + self.mean
        return torch.expm1(y) if self.log1p else y


TASKS: dict[str, Task] = {task.name: task for task in (BinaryTask(), MulticlassTask(), OrdinalTask(),
                                                        RegressionTask())}


def get_task(name: str) -> Task:
    """The task object for a name from a config (``binary``, ``multiclass``, ``ordinal``, ``regression``)."""
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
