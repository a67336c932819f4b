"""`FusionModel`: the branches it is handed, a fusion layer over them, and an output head.

A plain `nn.Module`: ``model(batch)`` with ``batch = {"cat", "cont", "input_ids", "attention_mask"}``
returns (B, n_outputs) logits (or values, for regression), or (B, k, n_outputs) when the tabular
branch is a k-member ensemble; the task (`mmtab.tasks`) turns either into losses and predictions.
Either branch may be absent, so a tabular-only, a text-only and a fused model are the same class.

A model with two branches also carries one small head per branch (`BranchHeads`, inside the ``head``
part: the heads train with the head's rates, in its param group), which predicts the target from that
branch's features alone; `outputs` gives every head's prediction, so a trainer
can report, at each validation, what the table alone, the text alone and their fusion score (the
modality report). ``branch_loss_weight`` says how much those heads' losses train the branches too
(0: they only watch).

Two words, one meaning each: the *branches* are the inputs' encoders (``tabular``, ``text``); the
*parts* are all top-level children (the branches, ``fusion`` and ``head``), which param groups and
freezing key on. Which parts are frozen is this model's state and nowhere else: `frozen`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmtab.errors import ConfigError
from mmtab.models.blocks import MLP, ActivationFactory
from mmtab.models.fusion import ConcatFusion
from mmtab.models.tabular import TabularMLP
from mmtab.models.text import TextEncoder

FusionFactory = Callable[[Mapping[str, int]], nn.Module]


class Head(nn.Module):
    """Optional `LinBnDrop` blocks, then the output Linear; with ``ensemble_size`` k > 1, one output
    Linear per member (``tabm.LinearEnsemble``) over rows that come as B * k member rows."""

    def __init__(self, in_features: int, n_outputs: int, *, layers: Sequence[int], dropout: float,
                 activation: ActivationFactory | None, y_range: tuple[float, float] | None,
                 ensemble_size: int = 1) -> None:
        super().__init__()
        self.mlp = MLP(in_features, layers, dropout=dropout, bn=True, activation=activation)
        self.n_outputs, self.ensemble_size = n_outputs, ensemble_size
        if ensemble_size > 1:
            import tabm

            self.out = tabm.LinearEnsemble(self.mlp.out_features, n_outputs, k=ensemble_size)
        else:
            self.out = nn.Linear(self.mlp.out_features, n_outputs)
        self.y_range = y_range  # as given: in the target's units
        # The range in the units the head outputs: the same unless a trainer standardises the target
        # (`MultimodalModule` sets it from `y_range`, never changing `y_range` itself).
        self.output_range = y_range
        self.branches: BranchHeads | None = None  # the branches' own heads (`FusionModel` sets them)

    def forward(self, x: Tensor) -> Tensor:
        x = self.mlp(x)
        if self.ensemble_size > 1:  # (B * k, d) -> (B, k, d): member j's rows through member j's Linear
            x = x.view(-1, self.ensemble_size, x.shape[-1])
        y = self.out(x)
        if self.output_range is not None:  # fastai's SigmoidRange: regression outputs kept inside (lo, hi)
            lo, hi = self.output_range
            y = torch.sigmoid(y) * (hi - lo) + lo
        return y


class BranchHeads(nn.Module):
    """One linear head per branch, each on its branch's features standardised per row (a LayerNorm
    without its own scale and shift, which the Linear that follows would absorb: the branches come out
    on very different scales, see `mmtab.models.fusion`).

    The heads are computed as one: the standardised features side by side, times one block-diagonal
    weight (each branch's outputs read only its own features). One matmul and two tensors instead
    of a LayerNorm and a Linear per branch keeps what they add to a training step small (the report
    must cost little: benchmarks/modality_report.py). No dropout: heads that only watch draw no random
    numbers, so the fused model trains exactly as it would without them.
    """

    def __init__(self, widths: Mapping[str, int], n_outputs: int) -> None:
        super().__init__()
        self.names = sorted(widths)
        self.widths = [widths[n] for n in self.names]
        self.n_outputs = n_outputs
        rows, cols = n_outputs * len(self.names), sum(self.widths)
        self.weight = nn.Parameter(torch.zeros(rows, cols))
        self.bias = nn.Parameter(torch.zeros(rows))
        mask = torch.zeros(rows, cols)
        start = 0
        for i, width in enumerate(self.widths):  # each block as nn.Linear(width, n_outputs) starts
            block = nn.Linear(width, n_outputs)
            out = slice(i * n_outputs, (i + 1) * n_outputs)
            with torch.no_grad():
                self.weight[out, start:start + width] = block.weight
                self.bias[out] = block.bias
            mask[out, start:start + width] = 1.0
            start += width
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        parts = [F.layer_norm(features[n], (w,)) for n, w in zip(self.names, self.widths)]
        if any(x.ndim == 3 for x in parts):  # an ensemble's (B, k, d) beside a shared (B, d)
            k = next(x.shape[1] for x in parts if x.ndim == 3)
            parts = [x if x.ndim == 3 else x.unsqueeze(1).expand(-1, k, -1) for x in parts]
        y = F.linear(torch.cat(parts, dim=-1), self.weight * self.mask, self.bias)
        c = self.n_outputs
        return {n: y[..., i * c:(i + 1) * c] for i, n in enumerate(self.names)}


class _ScaleGrad(torch.autograd.Function):
    """The identity forward; backward multiplies the gradient by `scale` (0: none passes)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


class FusionModel(nn.Module):
    """Branches -> fusion -> head.

    Args:
        n_outputs: number of classes, or 1 for regression (the CLI links it from the data).
        tabular: the tabular branch, built.
        text: the text branch, built.
        fusion: builds the fusion layer from the branches' widths; `ConcatFusion` by default.
        head_layers: hidden widths of the head before its output layer.
        head_dropout: dropout in the head's hidden blocks.
        head_activation: builds the head's hidden activations; ReLU unless given (e.g. `GeneralRelu`).
        y_range: for regression, squash outputs into (lo, hi) with a scaled sigmoid, as fastai does.
        branch_heads: with two branches, one linear head per branch (`BranchHeads`, in the ``head`` part),
            for the modality report; ignored with one branch.
        branch_loss_weight: how much of the branch heads' loss gradient reaches the branches (0: the
            heads learn from the branches' features and change nothing else; 1: each branch is also
            trained to predict the target alone, an auxiliary loss). The heads themselves always
            learn at full strength. 1 by default: over 5 seeds it raised the fused model's validation
            AUROC on 9 of 10 runs against 0 (reviews demo 0.9302 -> 0.9320, weak-text case
            0.9041 -> 0.9053; benchmarks/modality_report.py, docs/explain.md).
        text_into: where the text branch's features go. ``"fusion"``: beside the tabular branch's
            output, into the fusion layer and head (late fusion: the text enters the head as it comes).
            ``"tabular"``: into the tabular branch as inputs beside the table's columns
            (`TabularMLP.take_inputs`), so its MLP, and each member of its ensemble, learns the
            text's effects and their interactions with the columns, as MulTaBench feeds its
            target-aware vectors to tabular learners. Made for a short vector of a frozen branch (its
            ``reduce_to`` components); there is then one set of features to fuse, so no branch heads
            (no modality report). It pays where the text carries the target and costs where the text
            says little, so ``"fusion"`` stays the default (measured in docs/small-tables.md, a numeric
            target whose text carries it).

    Example:
        >>> m = FusionModel(n_outputs=2, tabular=TabularMLP(cardinalities=[4], n_cont=2, layers=[8]))
        >>> m({"cat": torch.tensor([[1], [3]]), "cont": torch.randn(2, 2)}).shape
        torch.Size([2, 2])
    """

    def __init__(self, *, n_outputs: int, tabular: TabularMLP | None = None, text: TextEncoder | None = None,
                 fusion: FusionFactory = ConcatFusion, head_layers: Sequence[int] = (), head_dropout: float = 0.0,
                 head_activation: ActivationFactory | None = None, y_range: tuple[float, float] | None = None,
                 branch_heads: bool = True, branch_loss_weight: float = 1.0,
                 text_into: Literal["fusion", "tabular"] = "fusion") -> None:
        super().__init__()
        if tabular is None and text is None:
            raise ConfigError("FusionModel needs at least one branch: give tabular=, text= or both")
        if text_into not in ("fusion", "tabular"):
            raise ConfigError(f"text_into is {text_into!r}: give 'fusion' (beside the tabular branch, into the head) "
                              "or 'tabular' (into the tabular branch as inputs)")
        if text_into == "tabular" and (tabular is None or text is None):
            raise ConfigError("text_into: tabular needs both branches (data.text_cols and table columns); this "
                              "model has only the " + ("text" if tabular is None else "tabular") + " branch")
        self.tabular = tabular
        self.text = text
        self.text_into = text_into
        if text_into == "tabular":
            tabular.take_inputs(text.out_features)
        widths = self._fused_widths()
        self.fusion = fusion(widths)
        # the tabular branch's ensemble (`TabularMLP.ensemble_size`) runs on through fusion and head
        self.ensemble_size: int = getattr(tabular, "ensemble_size", 1)
        # kept to build the head again for a model that lets a branch step aside (`drop_branch`)
        self._head_options = {"layers": list(head_layers), "dropout": head_dropout, "activation": head_activation,
                              "y_range": y_range, "ensemble_size": self.ensemble_size}
        self.head = Head(self.fusion.out_features, n_outputs, **self._head_options)
        if branch_heads and len(widths) > 1:  # in the head part: one param group fewer per optimizer step
            self.head.branches = BranchHeads(widths, n_outputs)
        if not 0.0 <= branch_loss_weight <= 1.0:
            raise ConfigError(f"branch_loss_weight is {branch_loss_weight}: give a value from 0 (the branch heads only "
                              "watch) to 1 (each branch is also trained to predict the target alone)")
        self.branch_loss_weight = branch_loss_weight
        self._frozen: set[str] = set()

    @property
    def frozen(self) -> frozenset[str]:
        """The parts now frozen; change it with `freeze` and `unfreeze`."""
        return frozenset(self._frozen)

    def parts(self) -> dict[str, nn.Module]:
        """Every part present, by name: the unit of param groups and freezing."""
        return dict(self.named_children())

    def branches(self) -> dict[str, nn.Module]:
        """The input branches present, by name."""
        return {n: b for n, b in (("tabular", self.tabular), ("text", self.text)) if b is not None}

    def _fused_widths(self) -> dict[str, int]:
        """The width of each set of features the fusion layer takes, by name: every branch's, or the
        tabular branch's alone when the text is among its inputs."""
        if self.text_into == "tabular":
            return {"tabular": self.tabular.out_features}
        return {name: branch.out_features for name, branch in self.branches().items()}

    def features(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The features the fusion layer takes (`_fused_widths`), by name."""
        out = {}
        grad = torch.is_grad_enabled()
        # the text first only where the tabular branch reads it: else the tabular branch draws its dropout
        # masks first, as it always has, so a fine-tuned fusion model's random streams stay as measured
        extra = self._text_features(batch, grad) if self.text_into == "tabular" else None
        if self.tabular is not None:
            with torch.set_grad_enabled(grad and "tabular" not in self._frozen):
                out["tabular"] = self.tabular(batch["cat"], batch["cont"], extra)  # (B, tabular.out_features)
        if self.text is not None and self.text_into == "fusion":
            out["text"] = self._text_features(batch, grad)  # (B, text.out_features)
        return out

    def _text_features(self, batch: Mapping[str, Tensor], grad: bool) -> Tensor:
        frozen = "text" in self._frozen
        with torch.set_grad_enabled(grad and not frozen):
            return self.text(batch, frozen=frozen)

    # ---------------------------------------------------------------------------------- freezing
    def freeze(self, name: str) -> None:
        """No gradients, eval mode (BatchNorm statistics and dropout fixed), forward under no_grad."""
        part = self._part(name)
        part.requires_grad_(False)
        part.eval()
        self._frozen.add(name)

    def unfreeze(self, name: str) -> None:
        part = self._part(name)
        part.requires_grad_(True)
        part.train(self.training)
        self._frozen.discard(name)

    def train(self, mode: bool = True) -> FusionModel:
        """Trainers call ``train()`` on the whole model each epoch; frozen parts stay in eval mode."""
        super().train(mode)
        for name in self._frozen:
            self._part(name).eval()
        return self

    def _part(self, name: str) -> nn.Module:
        parts = self.parts()
        if name not in parts:
            raise ConfigError(f"no part {name!r} in this model; its parts are {sorted(parts)}")
        return parts[name]

    def get_extra_state(self) -> dict[str, Any]:
        """The frozen set travels in the state dict, so a resumed run has exactly the same trainable set."""
        return {"frozen": sorted(self._frozen)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for name in self.parts():
            if name in state["frozen"]:
                self.freeze(name)
            elif name in self._frozen:
                self.unfreeze(name)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """(B, n_outputs), or (B, k, n_outputs) for a k-member ensemble (the task averages members)."""
        return self._fused(self.features(batch))

    def outputs(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Every head's outputs by name: ``fusion`` (what `forward` returns) and, with branch heads,
        each branch's own (``tabular``, ``text``), from one pass through the branches."""
        features = self.features(batch)
        out = {"fusion": self._fused(features)}
        if self.branch_heads is not None:
            w = self.branch_loss_weight
            if w == 0.0:  # the heads only watch: no gradient reaches the branches, and no autograd node
                features = {name: x.detach() for name, x in features.items()}
            elif w != 1.0:
                features = {name: _ScaleGrad.apply(x, w) if x.requires_grad else x for name, x in features.items()}
            out.update(self.branch_heads(features))
        return out

    @property
    def branch_heads(self) -> BranchHeads | None:
        """The heads of the branches alone, if this model has them."""
        return self.head.branches

    def drop_branch_heads(self) -> None:
        """Remove the branch heads (a checkpoint written before they existed has none to load)."""
        self.head.branches = None

    def drop_branch(self, name: str) -> None:
        """The model without one of its two branches, in place: what a one-branch model built with the
        same head settings is. With one branch there is nothing to fuse, so the fusion layer becomes the
        plain `ConcatFusion` of that branch (its features passed through unchanged, as in a one-branch
        model built with the default), and the head and its hidden layers are built afresh for that
        branch's width, with no branch heads. Used when the text steps aside
        (`mmtab.embeddings.text_choice`); the branch's weights go with it."""
        if name not in self.branches() or len(self.branches()) < 2:
            raise ConfigError(f"drop_branch({name!r}): the model's branches are {sorted(self.branches())}; only "
                              "one of two branches can be dropped")
        setattr(self, name, None)
        self._frozen.discard(name)
        if self.text_into == "tabular":
            self.text_into = "fusion"
            if self.tabular is not None:  # the text was among its inputs: it reads the table alone again
                self.tabular.take_inputs(0)
        widths = self._fused_widths()
        self.fusion = ConcatFusion(widths)
        output_range = self.head.output_range  # in the units the head outputs (a trainer may have set them)
        self.head = Head(self.fusion.out_features, self.head.n_outputs, **self._head_options)
        self.head.output_range = output_range
        for part in ("fusion", "head"):
            if part in self._frozen:
                self.freeze(part)

    def _fused(self, features: dict[str, Tensor]) -> Tensor:
        k = self.ensemble_size
        if k > 1:  # every branch as B * k member rows: the other branches' features are shared by all k
            features = {name: (x if x.ndim == 3 else x.unsqueeze(1).expand(-1, k, -1)).flatten(0, 1)
                        for name, x in features.items()}
        return self.head(self.fusion(features))
