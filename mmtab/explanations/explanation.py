"""`explain`: what a trained model relies on, on labelled rows, as tables, PNGs and one summary.

``mmtab explain --config C --ckpt_path best --explain.output DIR`` runs it on the validation rows
of the config's data with the checkpoint's model and fitted preprocessing; in Python,
``mmtab.explain(module, preprocessor, frame, output=DIR)`` does the same on any labelled frame.
What it writes to DIR (never over a file that is there, unless told):

* ``importance.csv`` and ``importance.png``: permutation importance per column
  (`mmtab.explanations.importance`);
* ``text_changes.csv``: the rows whose prediction their own text moved most, against the same row with
  other rows' texts (a model with text);
* ``reliability.png``: the reliability diagram before and after temperature scaling (a classifier),
  with the checkpoint's temperature where the fit calibrated (``model.calibrate``), else one fitted
  on these rows to show what calibration would do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from mmtab.artifacts import write_atomically
from mmtab.data.dataset import TensorTable
from mmtab.data.preprocessing import TabularPreprocessor
from mmtab.errors import ConfigError
from mmtab.explanations.calibration import calibrate
from mmtab.explanations.importance import head_outputs, permutation_importance, row_weights, text_changes
from mmtab.explanations.plots import plot_importance, plot_reliability

if TYPE_CHECKING:
    from mmtab.training.module import MultimodalModule

FILES = ("importance.csv", "importance.png", "text_changes.csv", "reliability.png")


@dataclass
class Explanation:
    """What `explain` found.

    Attributes:
        importance: one row per column (``column``, ``kind``, ``importance``: the drop in the main
            metric when the column is shuffled, ``std``, ``loss_increase``, ``loss_std``), most important first.
        scores: the model's main metric and weighted loss on the rows, unshuffled.
        text_changes: the rows whose prediction their own text moved most (None without text).
        calibration: ``temperature`` (and whether it is the checkpoint's, ``applied``), log loss and
            expected calibration error before and after it on the rows (None for regression).
        files: what was written.
    """

    importance: pd.DataFrame
    scores: dict[str, float]
    text_changes: pd.DataFrame | None = None
    calibration: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)

    def summary(self, main_metric: str) -> str:
        lines = [f"{main_metric} {self.scores[main_metric]:.4f}, loss {self.scores['loss']:.4f} on these rows; "
                 f"column importance (drop in {main_metric} when shuffled):"]
        width = max(len(c) for c in self.importance["column"])
        lines += [f"  {r.column.ljust(width)}  {r.importance:+.4f} ± {r.std:.4f}   (loss {r.loss_increase:+.4f})"
                  for r in self.importance.itertuples()]
        c = self.calibration
        if c is not None:
            source = ("the checkpoint's, applied by predict" if c["applied"]
                      else "fitted on these rows; not applied: fit with --model.calibrate true")
            lines.append(f"calibration: temperature {c['temperature']:.4f} ({source}); log loss "
                         f"{c['log_loss_before']:.4f} -> {c['log_loss_after']:.4f}, expected calibration error "
                         f"{c['ece_before']:.4f} -> {c['ece_after']:.4f}")
        lines += [f"wrote {path}" for path in self.files]
        return "\n".join(lines)


@torch.no_grad()
def explain(module: MultimodalModule, preprocessor: TabularPreprocessor, frame: pd.DataFrame, *,
            output: str | Path | None = None, repeats: int = 5, seed: int = 0, text_rows: int = 20,
            batch_size: int = 4096, overwrite: bool = False) -> Explanation:
    """Column importance, the rows their text moved most and calibration, on the labelled rows of
    `frame`, for a trained module and its fitted preprocessor (`mmtab.load_checkpoint` gives both).
    With `output`, the files listed in the module docstring are written there."""
    folder = Path(output) if output is not None else None
    if folder is not None:
        check_output(folder, overwrite=overwrite)
    if preprocessor.spec.target not in frame.columns:
        raise ConfigError(f"explain needs labelled rows: the rows have no target column {preprocessor.spec.target!r}")
    if repeats < 1:
        raise ConfigError(f"explain: repeats is {repeats}; give 1 or more shuffles per column")
    was_training = module.training
    module.eval()
    try:
        table = TensorTable(preprocessor.transform(frame))
        module.text_embeddings.attach(module.net, table)  # a frozen encoder's vectors: shuffled, never recomputed
        tensors = table.tensors
        raw = head_outputs(module, tensors, batch_size=batch_size)  # once: importance, text and calibration share it
        importance, scores = permutation_importance(module, preprocessor, tensors, repeats=repeats, seed=seed,
                                                    batch_size=batch_size, output=raw)
        changes = (text_changes(module, preprocessor, tensors, frame, rows=text_rows, seed=seed,
                                batch_size=batch_size, output=raw)
                   if preprocessor.spec.text else None)
        calibration = (calibration_on_rows(module, raw, tensors) if module.task.classification else None)
    finally:
        module.train(was_training)
    result = Explanation(importance, scores, changes, calibration)
    if folder is not None:
        result.files = write_files(result, module, raw, tensors, folder)
    return result


def calibration_on_rows(module: MultimodalModule, raw: torch.Tensor,
                        tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The temperature (the checkpoint's, else one fitted here) and its measures on these rows."""
    applied = module.calibration is not None
    measured = calibrate(module.task, raw, tensors["target"], row_weights(module, tensors),
                         temperature=module.calibration["temperature"] if applied else None)
    return {**measured, "applied": applied}


def check_output(folder: Path, *, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"explain output {str(folder)!r} is a file: name a folder (it is created)")
    there = [name for name in FILES if (folder / name).exists()]
    if there and not overwrite:
        raise ConfigError(f"explain output {str(folder)!r} already holds {there}: choose another folder, or pass "
                          "--explain.overwrite true to replace them")


def write_files(result: Explanation, module: MultimodalModule, raw: torch.Tensor, tensors: dict[str, torch.Tensor],
                folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    main = module.task.main_metric
    files = [write_atomically(folder / "importance.csv", lambda tmp: result.importance.to_csv(tmp, index=False))]
    files.append(plot_importance(result.importance, folder / "importance.png", metric=f"validation {main}",
                                 title=f"Column importance ({main} {result.scores[main]:.4f} unshuffled)"))
    if result.text_changes is not None:
        files.append(write_atomically(folder / "text_changes.csv",
                                      lambda tmp: result.text_changes.to_csv(tmp, index_label="row")))
    c = result.calibration
    if c is not None:
        files.append(plot_reliability(module.task.activate(raw), module.task.activate(raw / c["temperature"]),
                                      tensors["target"], folder / "reliability.png",
                                      title=f"Reliability, temperature {c['temperature']:.3f}"
                                            + (" (applied by predict)" if c["applied"] else " (not applied)")))
    return files
