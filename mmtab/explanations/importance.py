"""Which columns a trained model relies on: permutation importance per column, and the rows whose
prediction its text changed most.

A column's importance is how much the task's main metric (`mmtab.tasks.Task.main_metric`) drops
when that column's values are shuffled across the rows, everything else kept (Breiman 2001; the
model is not refitted, so it says what *this* model uses, not what the data could tell). The drop in
the sample-weighted loss is given too, and each is a mean over `repeats` shuffles with their spread.

A *column* is what the user named: a categorical or continuous column (with its missing-value
flag), a date column (all its parts together), a text column. The shuffle is done on the model's
inputs, row by row, which equals shuffling the raw values (preprocessing reads each row alone) and
costs no preprocessing. A text column is one feature: its texts move between rows with their
tokens and, for a frozen encoder, their cached vectors, so no text is encoded again. Text columns
joined into one text (``data.join_text: true``, or one vector for all) are one feature together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mmtab.data.dataset import BatchLoader, TensorTable
from mmtab.data.preprocessing import TabularPreprocessor
from mmtab.data.values import date_part_names
from mmtab.training.losses import loss_weights, weighted_mean

if TYPE_CHECKING:
    from mmtab.training.module import MultimodalModule

TEXT_INPUTS = ("input_ids", "attention_mask", "has_text")


@dataclass(frozen=True)
class Column:
    """One column as the model's inputs hold it: its positions in ``cat`` and ``cont``, or its text slot
    (None: every text slot, the joined text)."""

    name: str
    kind: str  # categorical, continuous, date or text
    cat: tuple[int, ...] = ()
    cont: tuple[int, ...] = ()
    text_slot: int | None = field(default=None)


def model_columns(preprocessor: TabularPreprocessor) -> list[Column]:
    """The user's columns, each with where its values sit in the model's inputs."""
    spec, features = preprocessor.spec, preprocessor.features
    cat = {c: j for j, c in enumerate(features.categorical)}
    cont = {c: j for j, c in enumerate(preprocessor.continuous_names)}

    def numbers(col: str) -> tuple[int, ...]:  # a number and its missing-value flag, if it has one
        return (cont[col], *((cont[f"{col}_na"],) if col in preprocessor.na_flag_cols else ()))

    columns = [Column(c, "categorical", cat=(cat[c],)) for c in spec.categorical]
    columns += [Column(c, "continuous", cont=numbers(c)) for c in spec.continuous]
    for col in spec.date:
        parts = date_part_names(col)
        columns.append(Column(col, "date", cat=(cat[parts["month"]], cat[parts["weekday"]]),
                              cont=numbers(parts["days"])))
    if spec.text:
        if preprocessor.options.text_slots(len(spec.text)) == 1:
            columns.append(Column(" + ".join(spec.text), "text"))
        else:
            columns += [Column(c, "text", text_slot=i) for i, c in enumerate(spec.text)]
    return columns


def shuffled(tensors: Mapping[str, Tensor], column: Column, order: Tensor, slots: int) -> dict[str, Tensor]:
    """The inputs with `column`'s values taken from the rows `order` names (every other input as it was)."""
    out = dict(tensors)
    for name, positions in (("cat", column.cat), ("cont", column.cont)):
        if positions:
            moved = out[name].clone()
            moved[:, list(positions)] = out[name][order][:, list(positions)]
            out[name] = moved
    if column.kind != "text":
        return out
    for name in TEXT_INPUTS:
        if name in out:
            out[name] = _move_slot(out[name], order, column.text_slot)
    if "text_embedding" in out:
        vectors = out["text_embedding"]
        if column.text_slot is None:
            out["text_embedding"] = vectors[order]
        else:
            width = vectors.shape[1] // slots
            part = slice(column.text_slot * width, (column.text_slot + 1) * width)
            moved = vectors.clone()
            moved[:, part] = vectors[order][:, part]
            out["text_embedding"] = moved
    if "lengths" in out:  # each row's longest text, which batches are cut to
        mask = out["attention_mask"]
        out["lengths"] = mask.sum(dim=-1) if mask.ndim == 2 else mask.sum(dim=-1).amax(dim=1)
    return out


def _move_slot(t: Tensor, order: Tensor, slot: int | None) -> Tensor:
    if slot is None or t.ndim == 1:
        return t[order]
    moved = t.clone()
    moved[:, slot] = t[order][:, slot]
    return moved


@torch.no_grad()
def head_outputs(module: MultimodalModule, tensors: Mapping[str, Tensor], *, batch_size: int = 4096,
                 head: str = "fusion") -> Tensor:
    """The raw outputs of one head (``fusion`` or a branch's) for every row, in row order, on the CPU."""
    device = next(module.parameters()).device
    outs = []
    for batch in BatchLoader(TensorTable(tensors), batch_size=batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        outs.append((module.net(batch) if head == "fusion" else module.net.outputs(batch)[head]).float().cpu())
    return torch.cat(outs)


def scores(module: MultimodalModule, output: Tensor, tensors: Mapping[str, Tensor]) -> dict[str, float]:
    """The task's main metric and the sample-weighted loss of raw outputs against the rows' targets."""
    task = module.task
    target = tensors["target"]
    metric = task.metrics(module.net.head.n_outputs, module.ordered_classes)[task.main_metric]
    metric.update(module.in_target_units(task.metric_inputs(output)), module.in_target_units(target))
    loss = weighted_mean(task.loss(output, target), row_weights(module, tensors))
    return {task.main_metric: float(metric.compute()), "loss": float(loss)}


def row_weights(module: MultimodalModule, tensors: Mapping[str, Tensor]) -> Tensor | None:
    """Each row's weight in the loss (sample weight times class weight), as training weighs it."""
    class_weights = None if module.class_weights is None else module.class_weights.cpu()
    return loss_weights(tensors["target"], tensors.get("weight"), class_weights)


def permutation_importance(module: MultimodalModule, preprocessor: TabularPreprocessor,
                           tensors: Mapping[str, Tensor], *, repeats: int = 5, seed: int = 0,
                           batch_size: int = 4096,
                           output: Tensor | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """(one row per column: ``column``, ``kind``, ``importance`` (the drop in the main metric), ``std``,
    ``loss_increase``, ``loss_std``, sorted by importance; the unshuffled scores)."""
    if "target" not in tensors:
        raise ValueError("permutation importance needs labelled rows (the target column)")
    slots = preprocessor.options.text_slots(len(preprocessor.spec.text)) if preprocessor.spec.text else 0
    if output is None:  # the unshuffled rows' raw outputs, when the caller has not computed them already
        output = head_outputs(module, tensors, batch_size=batch_size)
    base = scores(module, output, tensors)
    main = module.task.main_metric
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for column in model_columns(preprocessor):
        drops, rises = [], []
        for _ in range(repeats):
            order = torch.randperm(len(tensors["target"]), generator=generator)
            moved = shuffled(tensors, column, order, slots)
            s = scores(module, head_outputs(module, moved, batch_size=batch_size), moved)
            drops.append(base[main] - s[main])
            rises.append(s["loss"] - base["loss"])
        ddof = 1 if repeats > 1 else 0
        rows.append({"column": column.name, "kind": column.kind, "importance": float(np.mean(drops)),
                     "std": float(np.std(drops, ddof=ddof)), "loss_increase": float(np.mean(rises)),
                     "loss_std": float(np.std(rises, ddof=ddof))})
    table = pd.DataFrame(rows).sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)
    return table, base


def text_changes(module: MultimodalModule, preprocessor: TabularPreprocessor, tensors: Mapping[str, Tensor],
                 frame: pd.DataFrame, *, rows: int = 20, draws: int = 10, seed: int = 0,
                 batch_size: int = 4096, output: Tensor | None = None) -> pd.DataFrame:
    """The `rows` rows whose prediction their own text moved most: each row's prediction against the
    mean of its predictions with the texts of `draws` other rows drawn at random (the rest of the row
    kept), i.e. against what a typical text would have said. (Not against "no text": a row without
    text gets the learned no-text vector, which rows with all their text missing rarely trained, so
    it is an answer to another question.) The change is half the summed absolute change of the class
    probabilities (for values, the absolute change); the table holds the texts, the target, both
    predictions and the change."""
    task = module.task
    if output is None:
        output = head_outputs(module, tensors, batch_size=batch_size)
    own = module.in_target_units(task.activate(output))
    every_text = Column("text", "text")
    slots = preprocessor.options.text_slots(len(preprocessor.spec.text))
    generator = torch.Generator().manual_seed(seed)
    others = sum(module.in_target_units(task.activate(head_outputs(
        module, shuffled(tensors, every_text, torch.randperm(len(own), generator=generator), slots),
        batch_size=batch_size))) for _ in range(draws)) / draws
    if task.classification:
        change = 0.5 * (own - others).abs().sum(dim=1)
        classes = np.asarray(preprocessor.classes, dtype=object)
        shown = {"prediction": classes[task.predicted_class(own.numpy())],
                 "prediction_other_texts": classes[task.predicted_class(others.numpy())]}
        if len(classes) == 2:
            positive = f"prob_{classes[1]}"
            shown.update({positive: own[:, 1].numpy(), f"{positive}_other_texts": others[:, 1].numpy()})
    else:
        change = (own - others).abs()
        shown = {"prediction": own.numpy(), "prediction_other_texts": others.numpy()}
    target = [preprocessor.spec.target] if preprocessor.spec.target in frame else []
    table = frame[[*preprocessor.spec.text, *target]].copy()
    for name, values in shown.items():
        table[name] = values
    table["change"] = change.numpy()
    return table.sort_values("change", ascending=False, kind="stable").head(rows)
