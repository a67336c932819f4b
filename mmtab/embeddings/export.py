"""Text vectors out: each row's text vectors, reduced, in a Parquet file for any other learner.

``mmtab embed --config C [--ckpt_path P] --embed.output F.parquet`` (`export_embeddings`) runs the
config's text branch (with a checkpoint's weights, its LoRA adapters among them, when given; else
the pretrained encoder as shipped) over every row of the training, validation and test splits, and
writes, one row per table row: ``row`` (the row's label in its file), ``split``, every column of the
file the config does not name (an id, say), and each text column's vector reduced to ``dim``
numbers (``<column>_pc0``, ...; ``text_pc0``, ... for texts joined into one). As MulTaBench builds
its target-aware representations: each text's mean-pooled vector is L2-normalised, then projected
on the principal components of the training rows' vectors (PCA fitted on the training rows only).
A branch that reduces its own vectors (``net.text.reduce_to``: target-aware vectors, say) gives its
reduced vectors, the first ``dim`` of them; where its fit cross-fitted the training rows, those rows'
vectors are the cross-fitted ones the model trained on.
Vectors come from the embedding cache where it has them (`TextEmbeddings`), so a second export of
the same texts and weights encodes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mmtab.artifacts import write_atomically
from mmtab.embeddings.target_aware import crossfit_vectors
from mmtab.errors import ConfigError
from mmtab.models.reduction import Pca

if TYPE_CHECKING:
    from mmtab.data.datamodule import TabularTextDataModule
    from mmtab.training.module import MultimodalModule

SPLITS = ("train", "valid", "test")


def text_vectors(module: MultimodalModule, tensors: dict[str, Tensor]) -> Tensor:
    """(N, slots, width) L2-normalised pooled vectors of a table whose frozen-branch vectors are attached
    (``text_embedding``); a missing text gets the branch's no-text vector, as the model sees it. A branch
    that reduces its vectors (``reduce_to``) gives its reduced ones, (N, slots, reduce_to)."""
    text = module.net.text
    batch = {"text_embedding": tensors["text_embedding"], "has_text": tensors["has_text"]}
    if text.reduction is not None:
        return text(batch, frozen=True).view(len(batch["has_text"]), text.columns, -1)
    pooled = text.pooled(batch, frozen=True)
    slots = pooled.view(len(pooled), text.columns, -1)
    return torch.nn.functional.normalize(slots.float(), dim=-1)


def export_embeddings(module: MultimodalModule, datamodule: TabularTextDataModule, output: str | Path, *,
                      dim: int = 30, overwrite: bool = False) -> tuple[Path, pd.DataFrame]:
    """Write the Parquet file described in the module docstring; returns its path and its table."""
    path = Path(output)
    if path.suffix.lower() != ".parquet":
        raise ConfigError(f"embed output {str(path)!r}: name a .parquet file")
    if path.exists() and not overwrite:
        raise ConfigError(f"{str(path)!r} already exists; choose another --embed.output, or pass --embed.overwrite "
                          "true to replace it")
    if module.net.text is None:
        if (module.text_choice_report or {}).get("choice") == "table":
            raise ConfigError("mmtab embed: this model's text stepped aside (its fit's text choice chose the table "
                              "alone), so it has no text vectors to write; embed with a checkpoint of a fit whose text "
                              "was kept, such as configs/small_table_tar.yaml's")
        raise ConfigError("mmtab embed needs a text branch: this config's model has none (no data.text_cols)")
    if dim < 1:
        raise ConfigError(f"embed dim is {dim}: give 1 or more dimensions")
    net = module.net
    was_frozen = "text" in net.frozen
    net.freeze("text")  # vectors of the branch's current weights, through the cache
    module.eval()
    vectors, frames = {}, {}
    try:
        with torch.no_grad():
            for split in SPLITS:
                if split not in datamodule.frames:
                    continue
                table = datamodule.table(split)
                module.text_embeddings.attach(net, table)
                tensors = dict(table.tensors)
                if split == "train" and module.crossfit is not None:  # what the model trained on: no row's
                    tensors["text_embedding"] = crossfit_vectors(  # own target in its vector
                        module.text_embeddings, net.text, table, module.crossfit).view(len(table), -1)
                vectors[split] = text_vectors(module, tensors)
                frames[split] = datamodule.with_every_column(split)
    finally:
        if not was_frozen:
            net.unfreeze("text")
    train = vectors["train"]
    slots, width = train.shape[1], train.shape[2]
    dim = min(dim, width, len(train))
    names = datamodule.spec.text if slots == len(datamodule.spec.text) and slots > 1 else ["text"]
    if net.text.reduction is not None:  # the branch's own components, fitted on the training rows: the first dim
        def reduce(split: str, s: int) -> np.ndarray:
            return vectors[split][:, s, :dim].numpy()
    else:
        pcas = [Pca.fit(train[:, s], dim) for s in range(slots)]

        def reduce(split: str, s: int) -> np.ndarray:
            return pcas[s].transform(vectors[split][:, s]).numpy()
    named = set(datamodule.spec.columns())
    parts = []
    for split, frame in frames.items():
        out = pd.DataFrame({"row": frame.index.to_numpy(), "split": split})
        for col in frame.columns:
            if col not in named and col not in ("row", "split"):
                out[col] = frame[col].to_numpy()
        for s, name in enumerate(names):
            reduced = reduce(split, s)
            for i in range(dim):
                out[f"{name}_pc{i}"] = reduced[:, i].astype(np.float32)
        parts.append(out)
    table = pd.concat(parts, ignore_index=True)
    written = write_atomically(path, table.to_parquet)
    return written, table
