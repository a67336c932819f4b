"""`TabularMLP`: the tabular branch, functionally fastai's ``TabularModel`` without its final layer
(the output layer belongs to the fusion model's head, so the branch can be fused with others)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmtab.errors import ConfigError
from mmtab.models.blocks import MLP, ActivationFactory

# Above this many codes in all, a (B, codes) one-hot matrix costs more than an embedding lookup.
_ONE_HOT_MAX_ROWS = 1024
NumericEmbedding = Literal["none", "periodic", "piecewise"]
# the authors' defaults: PLR's d_embedding (Gorishniy et al. 2022); PLE "B" as TabM uses it
_EMBEDDING_DIM = {"periodic": 24, "piecewise": 16}


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
        numeric_embedding: how each continuous input enters the MLP: ``none`` (as one number, after
            BatchNorm: fastai's), ``periodic`` (PLR: learned sine/cosine frequencies, then a linear
            layer and ReLU) or ``piecewise`` (PLE: a piecewise-linear encoding over bins of equal
            training counts, then a linear layer). Both from ``rtdl_num_embeddings`` (Gorishniy et
            al. 2022, the authors' package); they let an MLP learn a column's non-monotone or
            threshold-like effects, which gradient boosting gets from its splits.
        numeric_embedding_dim: width of each continuous input's embedding (default 24 periodic,
            16 piecewise, the authors').
        frequency_scale: ``periodic`` only: the spread of the initial frequencies (the paper's
            sigma; larger for columns with fine structure, like latitude).
        n_bins: ``piecewise`` only: bins per input, edges at the training quantiles.
        cont_quantiles: per continuous input, its scaled training values' quantiles at evenly spaced
            levels (the CLI links it from the data; in Python ``**dm.tabular_dims``); piecewise
            embeddings take their bin edges from it.
        ensemble_size: k > 1 makes the branch and the model's output layer k members that share all
            other weights (TabM-mini, Gorishniy et al. 2025, with the ``tabm`` package's layers): each
            member scales the embedded inputs by its own learned vector (one scale per column, drawn
            at random so the members differ from the first step), the MLP runs on all k views, and
            the head gives each member its own output layer. Each member is trained on its own loss
            and predictions average the members' probabilities: most of a k-model ensemble's gain
            for about one model's parameters. The output is then (B, k, out_features).

    Example:
        >>> m = TabularMLP(cardinalities=[5, 12], n_cont=3, layers=[32, 16])
        >>> m(torch.tensor([[1, 4], [0, 11]]), torch.randn(2, 3)).shape  # (B, n_cat), (B, n_cont) -> (B, 16)
        torch.Size([2, 16])
    """

    def __init__(self, *, cardinalities: Sequence[int], n_cont: int, layers: Sequence[int] = (200, 100),
                 dropout: float | Sequence[float] = 0.0, embedding_dropout: float = 0.0,
                 embedding_sizes: Sequence[int] | None = None, bn_cont: bool = True, bn: bool = True,
                 activation: ActivationFactory | None = None, numeric_embedding: NumericEmbedding = "none",
                 numeric_embedding_dim: int | None = None, frequency_scale: float = 0.01, n_bins: int = 48,
                 cont_quantiles: Sequence[Sequence[float]] | None = None, ensemble_size: int = 1) -> None:
        super().__init__()
        if not isinstance(ensemble_size, int) or ensemble_size < 1:
            raise ConfigError(f"ensemble_size: {ensemble_size!r} is not a whole number >= 1 (1 means no ensemble; "
                              "TabM uses 32)")
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
        self.n_cont = n_cont
        self.numeric_embedding = numeric_embedding
        self.cont_embedding = _numeric_embeddings(numeric_embedding, n_cont, numeric_embedding_dim,
                                                  frequency_scale, n_bins, cont_quantiles)
        embedded = self.cont_embedding is not None
        self.bn_cont = nn.BatchNorm1d(n_cont) if bn_cont and n_cont and not embedded else None
        cont_width = 1 if not embedded else self.cont_embedding.get_output_shape()[1]
        self.ensemble_size = ensemble_size
        self._input_widths = [*sizes, *[cont_width] * n_cont]  # one per column, as member scaling chunks them
        self._mlp_options = {"layers": list(layers), "dropout": dropout, "bn": bn, "activation": activation}
        self.take_inputs(0)

    def take_inputs(self, width: int) -> None:
        """Read `width` more inputs beside the table's columns: another branch's features, each through
        BatchNorm (as fastai's continuous inputs) and scaled per ensemble member like a column of its
        own (`FusionModel`'s ``text_into="tabular"``). The MLP is built again for its new input width,
        so call it before training; 0 reads the table alone."""
        self.n_extra = width
        self.bn_extra = nn.BatchNorm1d(width) if width else None
        widths = [*self._input_widths, *[1] * width]
        self.member_scaling = _member_scaling(self.ensemble_size, widths) if self.ensemble_size > 1 else None
        self.mlp = MLP(sum(widths), **self._mlp_options)
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

    def forward(self, cat: Tensor, cont: Tensor, extra: Tensor | None = None) -> Tensor:
        """(B, n_cat) codes and (B, n_cont) numbers (and (B, `n_extra`) inputs from `take_inputs`) ->
        (B, out_features), or (B, k, out_features) for a k-member ensemble."""
        if (extra is None) != (self.n_extra == 0):
            raise ValueError(f"this branch reads {self.n_extra} extra inputs; got "
                             f"{'none' if extra is None else extra.shape[-1]}")
        parts = []
        if len(self.embeddings):
            parts.append(self.embedding_dropout(self.embed(cat)))
        if self.cont_embedding is not None:
            parts.append(self.cont_embedding(cont).flatten(1))  # (B, n_cont, d) -> (B, n_cont * d)
        elif self.n_cont:
            parts.append(self.bn_cont(cont) if self.bn_cont is not None else cont)
        if extra is not None:
            parts.append(self.bn_extra(extra))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B, in_features)
        if self.member_scaling is None:
            return self.mlp(x)
        # (B, k, in_features): k scaled views; the MLP (its BatchNorm too) sees them as B * k rows
        views = self.member_scaling(x.unsqueeze(1).expand(-1, self.ensemble_size, -1))
        return self.mlp(views.flatten(0, 1)).view(x.shape[0], self.ensemble_size, -1)


def _member_scaling(k: int, widths: list[int]) -> nn.Module:
    """Each member's scale of every input, one random N(0, 1) value per column and member, shared by
    the column's embedding units (TabM's init for embedded inputs: ``scaling_init_chunks``)."""
    import tabm

    return tabm.ElementwiseAffine((k, sum(widths)), bias=False, scaling_init="normal", scaling_init_chunks=widths)


def _numeric_embeddings(kind: NumericEmbedding, n_cont: int, dim: int | None, frequency_scale: float, n_bins: int,
                        cont_quantiles: Sequence[Sequence[float]] | None) -> nn.Module | None:
    if kind == "none" or n_cont == 0:
        return None
    import rtdl_num_embeddings  # here: it imports scikit-learn's trees when installed (a second at import)

    dim = dim or _EMBEDDING_DIM[kind]
    if kind == "periodic":
        return rtdl_num_embeddings.PeriodicEmbeddings(n_cont, dim, frequency_init_scale=frequency_scale, lite=False)
    if kind != "piecewise":
        raise ConfigError(f"numeric_embedding: unknown {kind!r}; choose none, periodic or piecewise")
    if cont_quantiles is None or len(cont_quantiles) != n_cont:
        raise ConfigError("numeric_embedding: piecewise needs cont_quantiles, one list per continuous input "
                          "(from the data: TabularMLP(**dm.tabular_dims, ...))")
    with warnings.catch_warnings():  # a 0/1 flag has one bin, and rtdl says so; that is expected here
        warnings.simplefilter("ignore")
        return rtdl_num_embeddings.PiecewiseLinearEmbeddings(
            [bin_edges(q, n_bins) for q in cont_quantiles], dim, activation=False, version="B")


def bin_edges(quantiles: Sequence[float], n_bins: int) -> Tensor:
    """`n_bins` bins of about equal training counts from a column's quantile table: distinct edges,
    at least two (a constant column gets one bin of width 1)."""
    q = torch.tensor(quantiles, dtype=torch.float32)
    picked = q[torch.linspace(0, len(q) - 1, min(n_bins, len(q) - 1) + 1).round().long()]
    edges = torch.unique(picked)  # sorted
    return edges if len(edges) >= 2 else torch.cat([edges, edges + 1])
