"""`TabularMLP`: the tabular branch, functionally fastai's ``TabularModel`` without its final layer
(the output layer belongs to the fusion model's head, so the branch can be fused with others)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmtab.errors import ConfigError
from mmtab.models.blocks import MLP, ActivationFactory

# Above this many codes in all, a (B, codes) one-hot matrix costs more than an embedding lookup.
_ONE_HOT_MAX_ROWS = 1024


def embedding_size(cardinality: int) -> int:
    """fastai's rule of thumb (``emb_sz_rule``): ``min(600, round(1.6 * n ** 0.56))``."""
    return min(600, round(1.6 * cardinality**0.56))


class TabularMLP(nn.Module):
    """Category embeddings + BatchNorm'd continuous inputs -> `LinBnDrop` blocks.

    Args:
        cardinalities: number of codes per categorical column (from the fitted preprocessor; the
            CLI links it from ``data.tabular_dims``).
        n_cont: number of continuous inputs, ``_na`` flags included (linked likewise).
        layers: widths of the hidden blocks, fastai's ``layers``.
        dropout: dropout after each block (one value, or one per block), fastai's ``ps``.
        embedding_dropout: dropout on the concatenated embeddings, fastai's ``embed_p``.
        embedding_sizes: width per categorical column; default fastai's `embedding_size` rule.
        bn_cont: BatchNorm on the continuous inputs.
        bn: BatchNorm inside the blocks.
        activation: builds each block's activation; ReLU unless given (e.g. `GeneralRelu`).

    Example:
        >>> m = TabularMLP(cardinalities=[5, 12], n_cont=3, layers=[32, 16])
        >>> m(torch.tensor([[1, 4], [0, 11]]), torch.randn(2, 3)).shape  # (B, n_cat), (B, n_cont) -> (B, 16)
        torch.Size([2, 16])
    """

    def __init__(self, *, cardinalities: Sequence[int], n_cont: int, layers: Sequence[int] = (200, 100),
                 dropout: float | Sequence[float] = 0.0, embedding_dropout: float = 0.0,
                 embedding_sizes: Sequence[int] | None = None, bn_cont: bool = True, bn: bool = True,
                 activation: ActivationFactory | None = None) -> None:
        super().__init__()
        cardinalities = list(cardinalities)
        sizes = list(embedding_sizes) if embedding_sizes is not None else [embedding_size(c) for c in cardinalities]
        if len(sizes) != len(cardinalities):
            raise ConfigError(f"embedding_sizes has {len(sizes)} values for {len(cardinalities)} categorical columns")
        if not cardinalities and n_cont == 0:
            raise ConfigError("TabularMLP needs at least one categorical or continuous input")
        self.embeddings = nn.ModuleList(nn.Embedding(c, s) for c, s in zip(cardinalities, sizes))
        for emb in self.embeddings:  # NOTE: fastai's init; PyTorch's N(0, 1) is far too wide for a sum of inputs
            nn.init.trunc_normal_(emb.weight, std=0.01, a=-0.02, b=0.02)
        # code j of column i is row offsets[i] + j of the block-diagonal table built in `embed`
        self.register_buffer("offsets", torch.tensor([0, *cardinalities[:-1]]).cumsum(0), persistent=False)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.bn_cont = nn.BatchNorm1d(n_cont) if bn_cont and n_cont else None
        self.n_cont = n_cont
        self.mlp = MLP(sum(sizes) + n_cont, layers, dropout=dropout, bn=bn, activation=activation)
        self.out_features = self.mlp.out_features

    def embed(self, cat: Tensor) -> Tensor:
        """(B, n_cat) codes -> (B, sum(embedding_sizes)), all columns in one kernel.

        The per-column tables lie on the diagonal of one (sum(cardinalities), sum(sizes)) table whose
        off-diagonal blocks are zero, so summing the n_cat rows a sample looks up *is* the
        concatenation of its embeddings: one lookup replaces n_cat lookups and a concat, with the
        same parameters and gradients. For small tables the lookup is a one-hot matmul, whose
        backward is a matmul too (an embedding's backward sorts the indices: several times slower).
        """
        table = torch.block_diag(*(e.weight for e in self.embeddings))  # (sum(cards), sum(sizes))
        codes = cat + self.offsets  # (B, n_cat), rows of `table`
        if table.shape[0] <= _ONE_HOT_MAX_ROWS:
            one_hot = torch.zeros(cat.shape[0], table.shape[0], dtype=table.dtype, device=table.device)
            return one_hot.scatter_(1, codes, 1.0) @ table
        return F.embedding_bag(codes, table, mode="sum")

    def forward(self, cat: Tensor, cont: Tensor) -> Tensor:
        parts = []
        if len(self.embeddings):
            parts.append(self.embedding_dropout(self.embed(cat)))
        if self.n_cont:
            parts.append(self.bn_cont(cont) if self.bn_cont is not None else cont)
        return self.mlp(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
