"""Target-aware text vectors (MulTaBench's TAR): the text branch's LoRA adapters fitted on the target
from the text alone, before the model trains on the vectors they give.

A frozen encoder's vectors are generic: on a few thousand rows, what they say about *this* target is
diluted in 384 dimensions. Here a text-only model (the branch's own encoder with its adapters, and a
linear head) learns the target first, early-stopped on rows held out *from the training rows* (never
the validation rows a user judges the model on); its adapters then stay in the branch, frozen, and
every row's vector comes from the adapted encoder through the embedding cache (keyed by the
adapters' weights), reduced where the branch reduces (`mmtab.models.reduction`). The model then
trains on those vectors beside the table. A checkpoint holds the adapters and the reduction, so
``predict`` runs the adapted encoder on new rows.

Leakage: the training rows' vectors come from an adapter that saw their targets, so they look more
telling than the vectors of rows it never saw. With ``crossfit: k`` each training row's vector comes
from one of k more adapters, fitted without that row's fold; validation, test and new rows get the
adapter fitted on all training rows (the branch's own). The k adapters' weights go into the
checkpoint (a few MB), so a resumed run rebuilds the same training vectors.

All of it runs inside ``trainer.fit`` (`MultimodalModule.on_fit_start`), so one config and one ``mmtab fit``
do the whole workflow; a resumed run fits nothing again (its checkpoint holds the result).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from mmtab.data.dataset import BatchLoader, TensorTable
from mmtab.data.splits import fold_of_rows, stratified_split
from mmtab.errors import ConfigError
from mmtab.models.adapters import ADAPTER_MARK
from mmtab.tasks import OrdinalTask, Task

if TYPE_CHECKING:
    from mmtab.embeddings.pipeline import TextEmbeddings
    from mmtab.models.text import TextEncoder
    from mmtab.training.module import MultimodalModule

log = logging.getLogger("mmtab")

CROSSFIT_KEY = "mmtab_crossfit"  # the checkpoint's entry: each training row's fold and the k adapters
FITS_KEY = "mmtab_target_aware"  # the checkpoint's entry: what each adapter fit did


@dataclass
class TargetAware:
    """How the text branch's adapters are fitted on the target before the model trains.

    Args:
        holdout: the share of the training rows held out to stop the adapter fit (stratified by
            class); the adapters of the epoch with the lowest loss on them are kept.
        max_epochs: at most this many passes over the other training rows.
        patience: stop after this many epochs without a lower held-out loss.
        lr: the adapters' and the text-only head's learning rate (constant; AdamW).
        weight_decay: their decoupled weight decay.
        batch_size: rows per adapter step.
        max_rows: fit the adapters on at most this many training rows (drawn once, stratified; the
            held-out share comes from them): on a large table a sample teaches the adapters about as
            much in a fraction of the time. None: all of them.
        crossfit: k >= 2 fits k more adapters, each without one fold of the training rows, and gives
            each training row the vector of the adapter that never saw it (see the module docstring);
            0 gives every row the vector of the adapter fitted on all training rows.
        cache_lower_layers: compute the hidden states entering the first adapted layer once (the
            layers below never change) and train only the layers above on them: each step runs the
            adapted layers alone. The layers below then run without dropout (in eval mode).
            Checked on the first rows against the whole encoder; if they differ, every step runs the
            whole encoder, with a warning.
        encoder_dropout: keep the encoder's own dropout in the adapted layers while the adapters fit.
            Off by default: the adapters have their own dropout (`LoraAdapters.dropout`), and on a CPU
            drawing the encoder's random masks cost as much as the matmuls they follow (44 ms against
            31 ms for a batch's feed-forward output in bf16, 2 cores), over a third of each step.
        regression: what the adapters learn from a numeric target. ``"binned"``: which of `bins`
            ordered bins it falls in (cut at the training rows' quantiles; equal cuts merge, so a
            target with few values gets fewer bins), on the ordinal task's loss: the adapters learn
            where a row stands rather than chase the squared error of its extremes. ``"loss"``: the
            value itself, on the model's squared error. Binned measured better on the reviews' rating
            read as a number (3,000 training rows, 3 seeds: R2 0.548 against 0.518 downstream;
            benchmarks/text_embeddings.py, case ``rating_small``). Classes are learned as they are.
        bins: the most bins for ``regression: binned``.
    """

    holdout: float = 0.2
    max_epochs: int = 10
    patience: int = 2
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    max_rows: int | None = None
    crossfit: int = 0
    cache_lower_layers: bool = True
    encoder_dropout: bool = False
    regression: Literal["loss", "binned"] = "binned"
    bins: int = 8

    def check(self, module: MultimodalModule) -> None:
        text = module.net.text
        where = "model.target_aware"
        if text is None:
            raise ConfigError(f"{where}: the model has no text branch (no data.text_cols) to fit adapters on")
        if text.lora is None:
            raise ConfigError(f"{where}: the text branch has no adapters to fit: give model.net.text.lora "
                              "(mmtab.models.adapters.LoraAdapters, e.g. {} for the defaults)")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"{where}.holdout is {self.holdout}: give a share between 0 and 1")
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ConfigError(f"{where}: max_epochs, patience and batch_size must be 1 or more")
        if self.max_rows is not None and self.max_rows < 10:
            raise ConfigError(f"{where}.max_rows is {self.max_rows}: give 10 or more, or null for every row")
        if self.regression not in ("loss", "binned"):
            raise ConfigError(f"{where}.regression is {self.regression!r}: give 'loss' (the numeric target) or "
                              "'binned' (its quantile bins as ordered classes)")
        if self.bins < 2:
            raise ConfigError(f"{where}.bins is {self.bins}: give 2 or more")
        if self.crossfit == 1 or self.crossfit < 0:
            raise ConfigError(f"{where}.crossfit is {self.crossfit}: give 0 (off) or 2 or more folds")
        if self.crossfit and "text" not in module.net.frozen:
            raise ConfigError(f"{where}.crossfit: the text branch trains on (it is not frozen), so the model never "
                              "reads the cross-fitted vectors; set model.parts.text.frozen: true, or crossfit: 0")


@dataclass
class AdapterFit:
    """What one adapter fit did: printed, and kept in the checkpoint."""

    name: str  # "all training rows", or "fold j"
    rows: int  # rows it trained on
    holdout_rows: int
    epochs: int
    best_epoch: int
    holdout_loss: float  # at the best epoch
    prior_loss: float  # of the best constant prediction (`Task.constant_output`) on the held-out rows
    seconds: float


@dataclass
class CrossFit:
    """Each training row's fold and, per fold, the text branch's trained weights from the adapter fit
    without that fold."""

    fold: Tensor  # (N train rows,) int64
    states: list[dict[str, Tensor]]

    def to_checkpoint(self) -> dict[str, Any]:
        return {"fold": self.fold, "states": self.states}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> CrossFit:
        return cls(fold=saved["fold"], states=list(saved["states"]))


@dataclass
class AdapterTarget:
    """What the text-only model learns: the model's own target, or a numeric target's bins."""

    task: Task
    n_outputs: int
    table: TensorTable  # the training rows, their target as this task reads it
    labels: np.ndarray | None  # class (or bin) of each row, to stratify by; None: a numeric target
    class_weights: list[float] | None

    @classmethod
    def of(cls, module: MultimodalModule, table: TensorTable) -> AdapterTarget:
        target = table.tensors["target"]
        config: TargetAware = module.target_aware
        if module.task.classification or config.regression == "loss":
            weights = None if module.class_weights is None else module.class_weights.tolist()
            labels = target.numpy() if module.task.classification else None
            return cls(module.task, module.net.head.n_outputs, table, labels, weights)
        values = target.double().numpy()  # standardised on the training rows: the same cuts as the raw values
        # cuts at values the rows hold (above the smallest), so no bin is empty
        cuts = np.unique(np.quantile(values, np.linspace(0, 1, config.bins + 1)[1:-1], method="higher"))
        cuts = cuts[cuts > values.min()]
        if len(cuts) == 0:
            raise ConfigError("model.target_aware.regression: binned: the training rows' target has one value, so "
                              "there is nothing to bin; use regression: loss or check the target column")
        bins = np.searchsorted(cuts, values, side="right")
        rank_zero_info(f"target-aware adapters learn the numeric target's bin: {len(cuts) + 1} ordered bins cut at "
                       f"its training quantiles (rows per bin: {np.bincount(bins).tolist()})")
        return cls(OrdinalTask(), len(cuts), TensorTable({**table.tensors, "target": torch.as_tensor(bins)}), bins,
                   None)


def fit_target_aware(module: MultimodalModule, table: TensorTable, *, seed: int) -> CrossFit | None:
    """Fit the adapters of `module`'s text branch on `table` (the training rows) and load them into it;
    with ``crossfit``, fit the k fold adapters too and return them."""
    config: TargetAware = module.target_aware
    trainer = module.trainer
    if trainer.world_size > 1:
        raise ConfigError("model.target_aware fits its adapters in one process; this run has "
                          f"{trainer.world_size}. Fit with --trainer.devices 1 (the adapters and the model), or "
                          "fit a target-aware model on one device and start the larger run from it (init_from)")
    text = module.net.text
    target = AdapterTarget.of(module, table)
    table, labels = target.table, target.labels
    n = len(table)
    series = label_series(labels)
    fold = fold_of_rows(series, n, config.crossfit, seed + 1) if config.crossfit else np.zeros(n, np.int64)
    if config.max_rows is not None and n > config.max_rows:  # the adapters learn from a sample; every row has a fold
        sample = np.sort(np.flatnonzero(stratified_split(label_series(labels), n, config.max_rows / n, seed)))
        table, labels = TensorTable(table[torch.as_tensor(sample)]), None if labels is None else labels[sample]
        sample_fold = fold[sample]
    else:
        sample_fold = fold
    rows = np.arange(len(table))  # from here on, places in `table`
    fits, crossfit = [], None
    started = time.perf_counter()
    below = LowerLayers.compute(text, table) if config.cache_lower_layers else None
    state, fit = _fit_one(module, target, text, table, rows, labels, seed, "all training rows", below)
    fits.append(fit)
    if config.crossfit:
        states = []
        for j in range(config.crossfit):
            fold_state, fit = _fit_one(module, target, text, table, rows[sample_fold != j], labels, seed + 2 + j,
                                       f"fold {j}", below)
            states.append(fold_state)
            fits.append(fit)
        crossfit = CrossFit(fold=torch.as_tensor(fold, dtype=torch.int64), states=states)
    text.load_state_dict(state, strict=False)  # the adapters fitted on all training rows are the branch's
    module.adapter_fits = [asdict(f) for f in fits]
    rank_zero_info(format_fits(fits) + f"\n(target-aware adapters: {time.perf_counter() - started:.1f} s)")
    return crossfit


def trained_state(text: TextEncoder) -> dict[str, Tensor]:
    """What an adapter fit changes in a text branch: the adapters, the pooling's weights and the no-text
    vector (never the base encoder weights, which the adapters leave as shipped)."""
    return {k: v.detach().clone() for k, v in text.state_dict().items()
            if not k.startswith(("encoder.", "reduction.")) or ADAPTER_MARK in k}


def _fit_one(module: MultimodalModule, target: AdapterTarget, text: TextEncoder, table: TensorTable,
             rows: np.ndarray, labels: np.ndarray | None, seed: int, name: str,
             below: LowerLayers | None = None) -> tuple[dict[str, Tensor], AdapterFit]:
    """One text-only model (a copy of the branch and a linear head) fitted on `rows`, early-stopped on a
    held-out share of them; returns the branch's trained weights at the best epoch. With `below`, the
    copy runs its adapted layers only, on the cached hidden states beneath them."""
    from mmtab.models.fusion_model import FusionModel
    from mmtab.training.module import MultimodalModule

    config: TargetAware = module.target_aware
    outer = module.trainer
    held = stratified_split(label_series(None if labels is None else labels[rows]), len(rows), config.holdout, seed)
    fit_rows, holdout_rows = rows[~held], rows[held]
    twin = text.unreduced()
    twin.requires_grad_(True)  # the adapters (and the no-text vector) train; the base weights stay fixed
    if not config.encoder_dropout:
        for path, layer in twin.encoder.named_modules():
            if isinstance(layer, nn.Dropout) and ADAPTER_MARK not in path:
                layer.p = 0.0  # attention reads its rate from here too; p = 0 returns its input untouched
    if below is not None:
        table = below.cut(twin, table)  # the rows' token ids become their places in the cache
    net = FusionModel(n_outputs=target.n_outputs, text=twin).train()  # the copy of a frozen branch is in eval
    inner = MultimodalModule(net, target.task.name, lr=config.lr, weight_decay=config.weight_decay, scheduler=None,
                             class_weights=target.class_weights, text_embeddings=module.text_embeddings)
    best = KeepBest(lambda: trained_state(twin))
    trainer = nested_trainer(outer, max_epochs=config.max_epochs, patience=config.patience, best=best)
    train_table = TensorTable(table[torch.as_tensor(fit_rows)])
    holdout_table = TensorTable(table[torch.as_tensor(holdout_rows)])
    started = time.perf_counter()
    rank_zero_info(f"target-aware adapters ({name}): {len(fit_rows)} rows, {len(holdout_rows)} held out to stop")
    trainer.fit(inner, BatchLoader(train_table, batch_size=config.batch_size, shuffle=True, seed=seed, bucket=True),
                BatchLoader(holdout_table, batch_size=4 * config.batch_size, by_length=True))
    fit = AdapterFit(name=name, rows=len(fit_rows), holdout_rows=len(holdout_rows), epochs=trainer.current_epoch,
                     best_epoch=best.epoch, holdout_loss=best.loss,
                     prior_loss=prior_loss(target.task, target.n_outputs, table, fit_rows, holdout_rows),
                     seconds=time.perf_counter() - started)
    return best.state, fit


def nested_trainer(outer: pl.Trainer, *, max_epochs: int, patience: int, best: KeepBest) -> pl.Trainer:
    """A trainer for a fit inside another fit's `on_fit_start` (an adapter fit, a text-choice candidate):
    the outer fit's device and precision, one process, early stopping on ``val_loss`` after each
    validation, the best epoch kept by `best`, and nothing written or printed but what the fit says."""
    return pl.Trainer(max_epochs=max_epochs, accelerator=outer.strategy.root_device.type, devices=1,
                      precision=outer.precision, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      callbacks=[EarlyStopping("val_loss", patience=patience, check_on_train_epoch_end=False), best])


class KeepBest(pl.Callback):
    """Keeps what `state` returns (the weights a nested fit trains) at the epoch with the lowest
    ``val_loss``, in memory: a few MB of adapters or a small model, where a checkpoint callback would
    write the whole model, its frozen encoder included, each epoch."""

    def __init__(self, state: Callable[[], dict[str, Tensor]]) -> None:
        self.take = state
        self.loss, self.epoch = math.inf, -1
        self.state: dict[str, Tensor] = state()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss = float(trainer.callback_metrics["val_loss"])
        if loss < self.loss:
            self.loss, self.epoch = loss, trainer.current_epoch
            self.state = {k: v.detach().cpu().clone() for k, v in self.take().items()}


def prior_loss(task: Task, n_outputs: int, table: TensorTable, fit_rows: np.ndarray,
               holdout_rows: np.ndarray) -> float:
    """The held-out rows' mean loss under the best constant prediction learned from `fit_rows` (the class
    shares, the mean: `Task.constant_output`). An adapter fit whose held-out loss is barely below it found
    little in the text about this target."""
    target = table.tensors["target"]
    fit, held = target[torch.as_tensor(fit_rows)], target[torch.as_tensor(holdout_rows)]
    constant = task.constant_output(fit, n_outputs)
    return float(task.loss(constant.expand(len(held), -1), held).mean())


class LowerLayers:
    """The hidden states entering an adapted encoder's first adapted layer, for every text of a table,
    computed once: those layers' weights never change, so an adapter fit need not run them each step.

    A copy of the branch is then `cut`: its embeddings hand back the cached states of the rows asked
    for and its lower layers pass them through unchanged, so the encoder's own forward (masks, the
    adapted layers, pooling) runs as before, on the layers above alone. The rows are asked for by
    their place in the cache, in the token-id column of the table the copy trains on.
    """

    def __init__(self, hidden: Tensor, first: int) -> None:
        self.hidden = hidden  # (texts, T, H) float32, zero past each text's length; texts = rows x slots
        self.first = first  # the first adapted layer's index

    @classmethod
    def compute(cls, text: TextEncoder, table: TensorTable) -> LowerLayers | None:
        embeddings, layers = _embeddings_and_layers(text.encoder)
        if embeddings is None:
            log.warning("mmtab: this encoder's embeddings and layers cannot be found; every adapter step runs the "
                        "whole encoder")
            return None
        first = len(layers) - text.lora.last_layers
        ids, mask = table.tensors["input_ids"], table.tensors["attention_mask"]
        ids, mask = ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, mask.shape[-1])
        hidden = torch.zeros(len(ids), ids.shape[-1], text.encoder.config.hidden_size)
        captured: list[Tensor] = []

        def capture(_module: nn.Module, _args: Any, output: Any) -> None:
            captured.append(output[0] if isinstance(output, tuple) else output)
            raise _Enough

        where = embeddings if first == 0 else layers[first - 1]
        handle = where.register_forward_hook(capture)
        was_training = text.encoder.training
        text.encoder.eval()
        started = time.perf_counter()
        try:
            with torch.no_grad():
                lengths = mask.sum(dim=1).clamp_min(1)
                order = torch.argsort(lengths)
                for start in range(0, len(order), 64):
                    rows = order[start:start + 64]
                    longest = int(lengths[rows].max())
                    device = text.no_text.device
                    try:
                        text.encoder(input_ids=ids[rows, :longest].to(device),
                                     attention_mask=mask[rows, :longest].to(device))
                    except _Enough:
                        pass
                    hidden[rows, :longest] = captured.pop().float().cpu()
        finally:
            handle.remove()
            text.encoder.train(was_training)
        log.info("mmtab: hidden states below adapted layer %d for %d texts in %.1f s", first, len(ids),
                 time.perf_counter() - started)
        return cls(hidden, first)

    def cut(self, twin: TextEncoder, table: TensorTable) -> TensorTable:
        """Make `twin` (a copy of the branch) run its adapted layers only, and return `table` with each
        text's token ids replaced by its place in the cache; if the cut copy's vectors differ from the
        whole encoder's on the first rows, leave both as they were (with a warning)."""
        ids, mask = table.tensors["input_ids"], table.tensors["attention_mask"]
        places = torch.arange(ids.numel() // ids.shape[-1]).view(*ids.shape[:-1], 1).expand_as(ids)
        probe = slice(0, min(8, len(ids)))
        whole = copy.deepcopy(twin).eval()
        embeddings, layers = _embeddings_and_layers(twin.encoder)
        twin.encoder.embeddings = _CachedStates(self.hidden)
        for i in range(self.first):
            layers[i] = _PassThrough()
        was_training = twin.training
        twin.eval()
        with torch.no_grad():
            ours = twin.encode(places[probe], mask[probe])
            theirs = whole.encode(ids[probe], mask[probe])
        twin.train(was_training)
        if not torch.allclose(ours, theirs, atol=1e-4, rtol=1e-3):
            log.warning("mmtab: the encoder run from its cached lower layers differs from the whole encoder (largest "
                        "difference %.2g); every adapter step runs the whole encoder",
                        float((ours - theirs).abs().max()))
            twin.encoder = whole.encoder.train(was_training)
            return table
        return TensorTable({**table.tensors, "input_ids": places})


class _Enough(Exception):
    """Raised by the capturing hook: the layers above are not needed."""


class _CachedStates(nn.Module):
    """Stands in for an encoder's embeddings: the "token ids" are places in the cache; returns those
    texts' cached hidden states, cut to the batch's length."""

    def __init__(self, hidden: Tensor) -> None:
        super().__init__()
        self.hidden = hidden  # a plain attribute: never in a state dict

    def forward(self, input_ids: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        places = input_ids[:, 0].cpu()
        return self.hidden[places, :input_ids.shape[1]].to(input_ids.device)


class _PassThrough(nn.Module):
    """Stands in for a layer below the adapted ones: its input was computed already."""

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return hidden_states


def _embeddings_and_layers(encoder: nn.Module) -> tuple[nn.Module | None, nn.ModuleList]:
    """A Hugging Face encoder's embeddings module and its list of transformer layers (the one whose
    length is the config's ``num_hidden_layers``, which the adapters' layer indices count in)."""
    n_layers = getattr(encoder.config, "num_hidden_layers", None)
    layers = next((m for m in encoder.modules() if isinstance(m, nn.ModuleList) and len(m) == n_layers), None)
    embeddings = getattr(encoder, "embeddings", None)
    if layers is None or not isinstance(embeddings, nn.Module):
        return None, nn.ModuleList()
    return embeddings, layers


def crossfit_vectors(embeddings: TextEmbeddings, text: TextEncoder, table: TensorTable, crossfit: CrossFit) -> Tensor:
    """(N, pooled width) pooled vectors of the training rows, each from the fold adapter that never saw it."""
    ids, mask = table.tensors["input_ids"], table.tensors["attention_mask"]
    if len(crossfit.fold) != len(ids):
        raise ConfigError(f"the checkpoint's cross-fitted folds cover {len(crossfit.fold)} training rows; these data "
                          f"have {len(ids)}: resume with the data the run was fitted on")
    vectors = torch.empty(len(ids), text.pooled_features)
    twin = copy.deepcopy(text)
    for j, state in enumerate(crossfit.states):
        twin.load_state_dict(state, strict=False)
        rows = torch.nonzero(crossfit.fold == j).flatten()
        part_ids, part_mask = ids[rows], mask[rows]
        flat = embeddings.embed(twin, part_ids.flatten(0, part_ids.ndim - 2), part_mask.flatten(0, part_mask.ndim - 2))
        vectors[rows] = flat.view(len(rows), -1)
    return vectors


def format_fits(fits: list[AdapterFit]) -> str:
    """The adapter fits as a table: how far below the constant prediction each got, and when it stopped."""
    header = ("adapter fit", "rows", "held out", "epochs", "best", "held-out loss", "constant's", "seconds")
    lines = [header] + [(f.name, str(f.rows), str(f.holdout_rows), str(f.epochs), str(f.best_epoch),
                         f"{f.holdout_loss:.4f}", f"{f.prior_loss:.4f}", f"{f.seconds:.1f}") for f in fits]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in lines)


def label_series(labels: np.ndarray | None) -> Any:
    """Class labels as the pandas Series the stratified splits take (None: a regression target)."""
    import pandas as pd

    return None if labels is None else pd.Series(labels)
