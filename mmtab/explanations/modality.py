"""The modality report: what the table alone, the text alone and their fusion score, at every validation.

A fused model carries one small head per branch (`mmtab.models.fusion_model.BranchHead`), trained
alongside the fusion on that branch's features. At each validation (and test) `ModalityReport`
measures every head on the same rows with the task's metrics and the sample-weighted loss, and the
paired difference of each branch's per-row loss from the fused model's, with its standard error:
that is what decides whether a branch alone beats the fused model "by more than noise" (its mean
loss lower by more than `NOISE_SE` standard errors), since the rows are the same for both.

The report is a plain dict (it goes into every checkpoint)::

    {"stage": "val", "epoch": 3, "main_metric": "auroc",
     "heads": {"fusion": {"loss": 0.25, "auroc": 0.94, ...},
               "tabular": {"loss": 0.31, "auroc": 0.88, ..., "loss_vs_fusion": 0.06, "loss_vs_fusion_se": 0.004},
               "text": {...}}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from mmtab.tasks import Task

REPORT_KEY = "mmtab_modality_report"  # where a checkpoint keeps the report of its own validation
NOISE_SE = 2.0  # a branch beats the fused model when its mean loss is lower by more than this many standard errors
HEADS = ("fusion", "tabular", "text")  # what --predictions.head chooses among (and "best")


class PairedLoss(Metric):
    """A head's weighted mean loss, and the weighted mean and standard error of its per-row difference
    from a reference head's loss on the same rows (the fused model's, in the report): one metric, so one
    update per branch and batch (the report must cost little), summed over processes like any
    torchmetrics state. The text choice (`mmtab.embeddings.text_choice`) compares its candidates with it."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("wl", "wd", "wd2", "w", "n"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, branch: Tensor, reference: Tensor, weights: Tensor | None) -> None:
        w = torch.ones_like(branch) if weights is None else weights.to(branch.dtype)
        d = (branch - reference).double()
        w = w.double()
        self.wl += (w * branch.double()).sum()
        self.wd += (w * d).sum()
        self.wd2 += (w * d * d).sum()
        self.w += w.sum()
        self.n += len(d)

    def compute(self) -> dict[str, float]:
        w = float(self.w.clamp_min(1e-300))
        mean, mean_sq, n = float(self.wd) / w, float(self.wd2) / w, float(self.n)
        return {"loss": float(self.wl) / w, "difference": mean,
                "difference_se": math.sqrt(max(mean_sq - mean * mean, 0.0) / max(n - 1.0, 1.0))}


class ModalityReport(nn.Module):
    """The branch heads' metrics and their paired loss differences from the fused model, per stage.

    The fused model's own metrics and loss stay the module's (``val_auroc``, ``val_loss``); a branch's
    are logged beside them, once per epoch, as ``val_<branch>_<metric>`` and ``val_<branch>_loss``.
    """

    def __init__(self, task: Task, n_outputs: int, ordered: bool, branches: Sequence[str]) -> None:
        super().__init__()
        self.branches = list(branches)
        self.metrics = nn.ModuleDict({
            stage: nn.ModuleDict({b: task.metrics(n_outputs, ordered).clone(prefix=f"{stage}_{b}_")
                                  for b in self.branches})
            for stage in ("val", "test")})
        self.losses = nn.ModuleDict({stage: nn.ModuleDict({b: PairedLoss() for b in self.branches})
                                     for stage in ("val", "test")})

    def update(self, stage: str, metric_inputs: Mapping[str, Tensor], target: Tensor,
               losses: Mapping[str, Tensor], weights: Tensor | None) -> None:
        """One evaluation batch: `metric_inputs` and per-row `losses` by head (``fusion`` and each branch)."""
        for b in self.branches:
            self.metrics[stage][b].update(metric_inputs[b], target)
            self.losses[stage][b].update(losses[b], losses["fusion"], weights)

    def reset(self, stage: str) -> None:
        for group in (self.metrics, self.losses):
            for metric in group[stage].values():
                metric.reset()

    def summary(self, stage: str, fused: Mapping[str, float], main_metric: str, undefined: Sequence[str] = (),
                epoch: int = 0) -> dict[str, Any]:
        """The stage's report (see the module docstring) from its accumulated batches, which it then
        forgets; `fused` are the fused model's metrics and ``loss`` (names without the stage prefix)."""
        heads: dict[str, dict[str, float]] = {"fusion": dict(fused)}
        for b in self.branches:
            paired = self.losses[stage][b].compute()
            prefix = f"{stage}_{b}_"
            row = {"loss": paired["loss"]}
            row.update({name[len(prefix):]: float(value) for name, value in self.metrics[stage][b].compute().items()})
            for name in undefined:
                if name in row:
                    row[name] = math.nan
            row.update(loss_vs_fusion=paired["difference"], loss_vs_fusion_se=paired["difference_se"])
            heads[b] = row
        self.reset(stage)
        return {"stage": stage, "epoch": epoch, "main_metric": main_metric, "heads": heads}


def beats_fusion(row: Mapping[str, float]) -> bool:
    """A branch's row: its loss is lower than the fused model's by more than noise."""
    return row.get("loss_vs_fusion", 0.0) < -NOISE_SE * row.get("loss_vs_fusion_se", 0.0)


def best_head(report: Mapping[str, Any] | None) -> str:
    """``fusion``, unless a branch alone beats it by more than noise: then the branch whose loss is lowest."""
    if not report:
        return "fusion"
    winners = {b: row["loss"] for b, row in report["heads"].items() if b != "fusion" and beats_fusion(row)}
    return min(winners, key=winners.get) if winners else "fusion"


HEAD_NAMES = {"fusion": "fusion", "tabular": "tabular alone", "text": "text alone"}


def format_report(report: Mapping[str, Any], *, reference: str = "fusion", names: Mapping[str, str] = HEAD_NAMES,
                  first: str = "head") -> str:
    """The report as a short table: one row per head, the main metric first, then the loss, then each
    head's paired loss difference from the `reference` head (``loss_vs_<reference>`` and its ``_se``)."""
    heads = report["heads"]
    main = report["main_metric"]
    others = [k for k in heads[reference] if k not in (main, "loss") and not k.startswith("loss_vs")]
    columns = [main, "loss", *others]
    rows = [(first, *columns, f"loss vs {names.get(reference, reference)}")]
    key = f"loss_vs_{reference}"
    for name, row in heads.items():
        cells = ["undefined" if math.isnan(row.get(c, math.nan)) else f"{row[c]:.4f}" for c in columns]
        versus = "" if name == reference else f"{row[key]:+.4f} ± {row[key + '_se']:.4f}"
        rows.append((names.get(name, name), *cells, versus))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def verdict(report: Mapping[str, Any]) -> str:
    """One line where a branch alone beats the fused model by more than noise ("" otherwise)."""
    best = best_head(report)
    if best == "fusion":
        return ""
    row = report["heads"][best]
    other = "text" if best == "tabular" else "tabular"
    drop = ("the table alone: drop data.text_cols (a small-table recipe without text)" if best == "tabular"
            else "the text alone: drop the tabular columns (a text-only recipe such as configs/reviews_text.yaml)")
    return (f"mmtab: the {best} branch alone beats the fused model on {report['stage']} (loss "
            f"{row['loss']:.4f} against {report['heads']['fusion']['loss']:.4f}, lower by "
            f"{-row['loss_vs_fusion'] / max(row['loss_vs_fusion_se'], 1e-12):.1f} standard errors): the {other} "
            f"branch adds noise here. Predict with --predictions.head {best} (or best), or fit {drop}")
