"""The validation metrics for each task, and how model outputs become the inputs they expect."""

from __future__ import annotations

import torch
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

from mmtab.data.columns import Task


def build_metrics(task: Task, n_outputs: int) -> MetricCollection:
    if task == "binary":
        return MetricCollection({"accuracy": BinaryAccuracy(), "auroc": BinaryAUROC(), "f1": BinaryF1Score()})
    if task == "multiclass":
        return MetricCollection({"accuracy": MulticlassAccuracy(n_outputs, average="micro"),
                                 "auroc": MulticlassAUROC(n_outputs), "f1": MulticlassF1Score(n_outputs)})
    return MetricCollection({"mae": MeanAbsoluteError(), "rmse": MeanSquaredError(squared=False), "r2": R2Score()})


def metric_inputs(output: Tensor, task: Task) -> Tensor:
    """Logits -> P(class 1) for binary, class probabilities for multiclass, values for regression."""
    if task == "binary":
        return torch.softmax(output.float(), dim=1)[:, 1]
    if task == "multiclass":
        return torch.softmax(output.float(), dim=1)
    return output.float().squeeze(-1)
