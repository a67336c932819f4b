"""Text vectors out: each row's text vectors, reduced, in a Parquet file for any other learner.

``mmtab embed --config C [--ckpt_path P] --embed.output F.parquet`` (`export_embeddings`) runs the
config's text branch (with a checkpoint's weights, its LoRA adapters among them, when given; else
the pretrained encoder as shipped) over every row of the training, validation and test splits, and
writes, one row per table row: ``row`` (the row's label in its file), ``split``, every column of the
file the config does not name (an id, say), and each text column's vector reduced to ``dim``
numbers (``<column>_pc0``, ...; ``text_pc0``, ... for texts joined into one). As MulTaBench builds
its target-aware representations: each text's mean-pooled vector is L2-normalised, then projected
on the principal components of the training rows' vectors (PCA fitted on the training rows only).
Vectors come from the embedding cache where it has them (`TextEmbeddings`), so a second export of
the same texts and weights encodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mmtab.artifacts import write_atomically
from mmtab.errors import ConfigError

if TYPE_CHECKING:
    from mmtab.data.datamodule import TabularTextDataModule
    from mmtab.training.module import MultimodalModule

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Pca:
    """The principal components of a set of vectors: ``(x - mean) @ components.T``."""

    mean: Tensor  # (width,)
    components: Tensor  # (dim, width), the first of largest variance; signs fixed (largest entry positive)

    @classmethod
    def fit(cls, x: Tensor, dim: int) -> Pca:
        x = x.double()
        mean = x.mean(dim=0)
        _, _, vt = torch.linalg.svd(x - mean, full_matrices=False)
        components = vt[:dim]
        signs = torch.sign(components.gather(1, components.abs().argmax(dim=1, keepdim=True)))
        return cls(mean=mean, components=components * signs)  # a deterministic sign, as scikit-learn's svd_flip

    def transform(self, x: Tensor) -> Tensor:
        return ((x.double() - self.mean) @ self.components.T).float()


def text_vectors(module: MultimodalModule, tensors: dict[str, Tensor]) -> Tensor:
    """(N, slots, width) L2-normalised pooled vectors of a table whose frozen-branch vectors are attached
    (``text_embedding``); a missing text gets the branch's no-text vector, as the model sees it."""
    text = module.net.text
    pooled = text({"text_embedding": tensors["text_embedding"], "has_text": tensors["has_text"]}, frozen=True)
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
                vectors[split] = text_vectors(module, table.tensors)
                frames[split] = datamodule.with_every_column(split)
    finally:
        if not was_frozen:
            net.unfreeze("text")
    train = vectors["train"]
    slots, width = train.shape[1], train.shape[2]
    dim = min(dim, width, len(train))
    names = datamodule.spec.text if slots == len(datamodule.spec.text) and slots > 1 else ["text"]
    pcas = [Pca.fit(train[:, s], dim) for s in range(slots)]
    named = set(datamodule.spec.columns())
    parts = []
    for split, frame in frames.items():
        out = pd.DataFrame({"row": frame.index.to_numpy(), "split": split})
        for col in frame.columns:
            if col not in named and col not in ("row", "split"):
                out[col] = frame[col].to_numpy()
        for s, (name, pca) in enumerate(zip(names, pcas, strict=True)):
            reduced = pca.transform(vectors[split][:, s]).numpy()
            for i in range(dim):
                out[f"{name}_pc{i}"] = reduced[:, i].astype(np.float32)
        parts.append(out)
    table = pd.concat(parts, ignore_index=True)
    written = write_atomically(path, table.to_parquet)
    return written, table
