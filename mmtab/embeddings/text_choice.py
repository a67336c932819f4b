"""Text that pays for itself or steps aside: one fit chooses, on rows held out from the training rows,
between the table alone, the frozen encoder's text vectors and the target-aware ones.

On a few thousand rows a text column may carry little about the target, and a model that reads it
can score below the table alone. With ``model.text_choice`` the fit first holds out a share of the
training rows (never the validation rows a user judges on), fits one model per candidate on the
others with the recipe's own settings, each stopped early on the held-out rows, and measures each on
them:

* ``table``: the text steps aside (`FusionModel.drop_branch`): the table alone;
* ``frozen``: the text branch's vectors from the encoder as shipped (its LoRA adapters as built, which
  change nothing: peft starts each adapter's B at 0);
* ``target_aware``: the adapters fitted on the target first (`mmtab.embeddings.target_aware`, on the
  same training rows less the held-out share, so the held-out rows are new to them too), where the
  model has ``model.target_aware``.

The candidate with the lowest held-out loss is chosen; its paired per-row loss difference from the
table alone, with its standard error, is printed beside it (the modality report's measure,
`mmtab.explanations.modality.PairedLoss`), so a user sees whether the text paid by more than noise.
The model then fits on every training row as the candidate chosen (the adapters of the target-aware
candidate are kept, not fitted again). The choice and the three scores go into the checkpoint; a
model whose text stepped aside is rebuilt without its text branch when the checkpoint is loaded, so
``predict`` never encodes a text, and a resumed run chooses nothing again.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from mmtab.data.dataset import BatchLoader, TensorTable
from mmtab.data.splits import stratified_split
from mmtab.embeddings.target_aware import (
    KeepBest,
    fit_target_aware,
    label_series,
    nested_trainer,
    trained_state,
)
from mmtab.errors import ConfigError
from mmtab.explanations.modality import PairedLoss, format_report

if TYPE_CHECKING:
    from mmtab.models.fusion_model import FusionModel
    from mmtab.training.module import MultimodalModule

CHOICE_KEY = "mmtab_text_choice"  # the checkpoint's entry: the candidates' held-out scores and the choice
CANDIDATES = {"table": "table alone", "frozen": "frozen text", "target_aware": "target-aware text"}
PATIENCE = 10  # epochs without a lower held-out loss, where the trainer has no EarlyStopping of its own


@dataclass
class TextChoice:
    """How a fit chooses between the table alone, frozen text and target-aware text.

    Args:
        holdout: the share of the training rows held out to choose on (stratified by class); the
            candidates train on the others.
        max_epochs: each candidate's most epochs; ``null``: the trainer's ``max_epochs``.
        patience: each candidate stops after this many epochs without a lower held-out loss, and is
            scored at its best epoch; ``null``: the trainer's ``EarlyStopping`` patience (10 without one).
    """

    holdout: float = 0.2
    max_epochs: int | None = None
    patience: int | None = None

    def check(self, module: MultimodalModule) -> None:
        where = "model.text_choice"
        net = module.net
        if net.text is None or net.tabular is None:
            raise ConfigError(f"{where} chooses whether a text column joins the table: the model needs both a tabular "
                              "branch and a text branch (data.text_cols and table columns)")
        if "text" not in net.frozen:
            raise ConfigError(f"{where} compares frozen and target-aware text vectors: set model.parts.text.frozen: "
                              "true (fine-tuning the encoder is another recipe: configs/reviews_text.yaml)")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"{where}.holdout is {self.holdout}: give a share between 0 and 1")
        if (self.max_epochs is not None and self.max_epochs < 1) or (self.patience is not None and self.patience < 1):
            raise ConfigError(f"{where}: max_epochs and patience must be 1 or more (or null for the trainer's)")
        if module.target_aware is not None and module.target_aware.crossfit:
            raise ConfigError(f"{where} keeps the target-aware candidate's adapters, fitted without the rows it "
                              "chooses on; it does not cross-fit: set model.target_aware.crossfit: 0")

    @staticmethod
    def candidates(module: MultimodalModule) -> list[str]:
        """``table`` and ``frozen``, and ``target_aware`` where the model has ``model.target_aware``."""
        return ["table", "frozen", *(["target_aware"] if module.target_aware is not None else [])]


def choose_text(module: MultimodalModule, table: TensorTable, *, seed: int, batch_size: int) -> dict[str, Any]:
    """Fit and score every candidate on `table` (the training rows) and return what was measured, the
    choice (the lowest held-out loss) included; the text branch is left with the chosen adapters, and the
    caller drops it where the table alone was chosen (`apply_choice`, which a loaded checkpoint runs too)."""
    config: TextChoice = module.text_choice
    trainer = module.trainer
    if trainer.world_size > 1:
        raise ConfigError("model.text_choice fits its candidates in one process; this run has "
                          f"{trainer.world_size}: fit with --trainer.devices 1")
    started = time.perf_counter()
    labels = table.tensors["target"].numpy() if module.task.classification else None
    held = stratified_split(label_series(labels), len(table), config.holdout, seed + 7)
    fit_rows, choice_rows = np.flatnonzero(~held), np.flatnonzero(held)
    as_built = trained_state(module.net.text)  # the adapters as built change nothing: the frozen encoder
    rank_zero_info(f"text choice: {len(fit_rows)} training rows to fit each candidate, {len(choice_rows)} held out "
                   f"to choose on ({', '.join(CANDIDATES[c] for c in TextChoice.candidates(module))})")
    scored: dict[str, _Scored] = {}
    for candidate in TextChoice.candidates(module):
        if candidate == "target_aware":  # the branch's own adapters, fitted without the rows it is chosen on
            fit_target_aware(module, TensorTable(table[torch.as_tensor(fit_rows)]), seed=seed)
        net = copy.deepcopy(module.net)
        if candidate == "table":
            net.drop_branch("text")
        elif candidate == "frozen":
            net.text.load_state_dict(as_built, strict=False)
        scored[candidate] = _fit_candidate(module, net, table, fit_rows, choice_rows, seed, batch_size)
    report = _report(module, scored, len(fit_rows), len(choice_rows))
    if report["choice"] == "frozen":
        module.net.text.load_state_dict(as_built, strict=False)
    rank_zero_info(format_choice(report) + f"\n(text choice: {time.perf_counter() - started:.1f} s)")
    return report


def apply_choice(net: FusionModel, choice: str) -> None:
    """Make `net` what the choice says: without its text branch where the text stepped aside."""
    if choice == "table" and net.text is not None:
        net.drop_branch("text")


@dataclass
class _Scored:
    """One candidate on the held-out rows, row by row (in one fixed order for every candidate)."""

    losses: Tensor
    weights: Tensor | None
    metric_inputs: Tensor
    target: Tensor
    best_epoch: int
    epochs: int
    seconds: float


def _fit_candidate(module: MultimodalModule, net: FusionModel, table: TensorTable, fit_rows: np.ndarray,
                   choice_rows: np.ndarray, seed: int, batch_size: int) -> _Scored:
    """`net` trained as the module's recipe trains (its rates, parts, optimizer and schedule) on `fit_rows`,
    stopped on `choice_rows`, and measured on them at its best epoch."""
    from mmtab.training.module import MultimodalModule, fit_text_reduction

    config: TextChoice = module.text_choice
    outer = module.trainer
    rows = TensorTable(dict(table.tensors))  # its own text vectors, beside the table's
    module.text_embeddings.attach(net, rows)
    fit_table = TensorTable(rows[torch.as_tensor(fit_rows)])
    choice_table = TensorTable(rows[torch.as_tensor(choice_rows)])
    fit_text_reduction(net, module.text_embeddings, fit_table)
    inner = MultimodalModule(
        net, module.task.name, lr=module.lr, weight_decay=module.weight_decay,
        parts={name: hp for name, hp in module.parts.items() if name in net.parts()},
        optimizer=module.optimizer_factory, scheduler=module.scheduler,
        class_weights=None if module.class_weights is None else module.class_weights.tolist(),
        target_scaling=None if module.target_scaling is None else asdict(module.target_scaling),
        text_embeddings=module.text_embeddings, ordered_classes=module.ordered_classes)
    inner.report_progress = False
    # the frozen text branch never changes (its vectors are in the tables), so the best state leaves it out
    best = KeepBest(lambda: {k: v for k, v in net.state_dict().items()
                             if torch.is_tensor(v) and not k.startswith("text.")})
    trainer = nested_trainer(outer, max_epochs=config.max_epochs or outer.max_epochs,
                             patience=config.patience or _patience(outer), best=best)
    started = time.perf_counter()
    trainer.fit(inner, BatchLoader(fit_table, batch_size=batch_size, shuffle=True, seed=seed),
                BatchLoader(choice_table, batch_size=4 * batch_size))
    net.load_state_dict(best.state, strict=False)
    net.eval()
    losses, weights, inputs, targets = [], [], [], []
    with torch.no_grad():
        for batch in BatchLoader(choice_table, batch_size=4 * batch_size):
            batch = {k: v.to(inner.device) for k, v in batch.items()}
            output, loss, weight = inner.per_sample_losses(batch)
            losses.append(loss.float().cpu())
            weights.append(None if weight is None else weight.float().cpu())
            inputs.append(inner.in_target_units(module.task.metric_inputs(output.float())).cpu())
            targets.append(inner.in_target_units(batch["target"]).cpu())
    return _Scored(losses=torch.cat(losses), weights=None if weights[0] is None else torch.cat(weights),
                   metric_inputs=torch.cat(inputs), target=torch.cat(targets), best_epoch=best.epoch,
                   epochs=trainer.current_epoch, seconds=time.perf_counter() - started)


def _report(module: MultimodalModule, scored: dict[str, _Scored], fit_rows: int, choice_rows: int) -> dict[str, Any]:
    """The candidates' held-out metrics and loss, each one's paired loss difference from the table alone,
    and the choice: the lowest loss."""
    n_outputs = module.net.head.n_outputs
    reference = scored["table"]
    heads: dict[str, dict[str, float]] = {}
    for name, s in scored.items():
        metrics = module.task.metrics(n_outputs, module.ordered_classes)
        row = {k: float(v) for k, v in metrics(s.metric_inputs, s.target).items()}
        paired = PairedLoss()
        paired.update(s.losses, reference.losses, s.weights)
        measured = paired.compute()
        row.update(loss=measured["loss"], loss_vs_table=measured["difference"],
                   loss_vs_table_se=measured["difference_se"], best_epoch=float(s.best_epoch),
                   seconds=s.seconds)
        heads[name] = row
    choice = min(heads, key=lambda name: heads[name]["loss"])
    return {"stage": "choice", "main_metric": module.task.main_metric, "heads": heads, "choice": choice,
            "fit_rows": fit_rows, "holdout_rows": choice_rows}


def format_choice(report: dict[str, Any]) -> str:
    """The candidates' held-out scores as a table, and the choice."""
    shown = {**report, "heads": {name: {k: v for k, v in row.items() if k not in ("best_epoch", "seconds")}
                                 for name, row in report["heads"].items()}}
    table = format_report(shown, reference="table", names=CANDIDATES, first="candidate")
    choice = report["choice"]
    row = report["heads"][choice]
    why = ("no text candidate's held-out loss is below the table's" if choice == "table" else
           f"held-out loss {row['loss_vs_table']:+.4f} ± {row['loss_vs_table_se']:.4f} against the table alone")
    return (f"text choice ({report['holdout_rows']} training rows held out; each candidate fitted on "
            f"{report['fit_rows']}):\n{table}\nchosen: {CANDIDATES[choice]} ({why}); the model now fits on every "
            "training row with it")


def _patience(trainer: pl.Trainer) -> int:
    stopping = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    return PATIENCE if stopping is None else stopping.patience

