"""Predictions as a table beside the rows they belong to, per-row losses, and the top-losses report.

`predict_frame` is the Python entry point; `PredictionWriter` is what ``mmtab predict`` runs. Both
build the table with `prediction_table`, so the CLI and a notebook give the same columns.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning.pytorch as pl
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from mmtab.artifacts import write_atomically
from mmtab.data.dataset import BatchLoader, TensorTable
from mmtab.data.preprocessing import TabularPreprocessor
from mmtab.errors import ConfigError

log = logging.getLogger("mmtab")

if TYPE_CHECKING:
    from mmtab.training.module import MultimodalModule

def prediction_table(outputs: list[dict[str, torch.Tensor]], preprocessor: TabularPreprocessor,
                     frame: pd.DataFrame, *, include_inputs: bool = True) -> pd.DataFrame:
    """Batch outputs (in row order) -> the input rows plus the task's prediction columns
    (``prediction``, and ``prob_<class>`` for classification) and ``loss``."""
    output = torch.cat([o["output"] for o in outputs]).cpu().numpy()
    table = frame.copy() if include_inputs else pd.DataFrame(index=frame.index)
    predicted = torch.cat([o["predicted"] for o in outputs]).cpu().numpy() if outputs and "predicted" in outputs[0] \
        else None  # the class of the uncalibrated outputs (calibration never moves it)
    for name, values in preprocessor.task.prediction_columns(output, preprocessor.classes, predicted).items():
        table[name] = values
    note = "" if preprocessor.target_scaling is None else preprocessor.target_scaling.negative_note(output)
    if note:
        log.warning(note)
    if outputs and "loss" in outputs[0]:
        table["loss"] = torch.cat([o["loss"] for o in outputs]).cpu().numpy()
    return table


def top_losses(table: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The `n` rows the model gets most wrong (needs a table predicted on labelled rows)."""
    if "loss" not in table.columns:
        raise ConfigError("no 'loss' column: predict on rows that have the target column to get per-row losses")
    return table.sort_values("loss", ascending=False).head(n)


@torch.no_grad()
def predict_frame(module: MultimodalModule, preprocessor: TabularPreprocessor, frame: pd.DataFrame, *,
                  batch_size: int = 4096, head: str = "fusion") -> pd.DataFrame:
    """Predict new rows in Python with a trained module and its fitted preprocessor (a frozen text
    branch reads the rows' embeddings from the cache, as ``mmtab predict`` does). `head` as
    ``--predictions.head``: ``fusion``, ``tabular``, ``text`` or ``best``."""
    was_training, was_head = module.training, module.prediction_head
    module.eval()
    module.select_prediction_head(head)
    try:
        table = TensorTable(preprocessor.transform(frame))
        module.text_embeddings.attach(module.net, table)
        device = next(module.parameters()).device
        outputs = [module.predict_step({k: v.to(device) for k, v in batch.items()}, i)
                   for i, batch in enumerate(BatchLoader(table, batch_size=batch_size))]
    finally:
        module.train(was_training)
        module.prediction_head = was_head
    return prediction_table(outputs, preprocessor, frame)


def write_table(table: pd.DataFrame, path: str | Path, *, overwrite: bool = False) -> Path:
    path = Path(path)
    check_writable(path, overwrite=overwrite)
    if path.suffix.lower() == ".parquet":
        return write_atomically(path, table.to_parquet)
    return write_atomically(path, lambda tmp: table.to_csv(tmp, index=False))


def check_writable(path: Path, *, overwrite: bool) -> None:
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"predictions output {str(path)!r}: use a .csv or .parquet file name")
    if path.is_dir():
        raise ConfigError(f"predictions output {str(path)!r} is a folder: name a file in it, such as "
                          f"--predictions.output {str(path / 'predictions.csv')!r}")
    if not path.parent.is_dir():
        raise ConfigError(f"predictions output {str(path)!r}: its folder {str(path.parent)!r} does not exist; "
                          "create it or choose another --predictions.output")
    if path.exists() and not overwrite:
        raise ConfigError(f"{str(path)!r} already exists; choose another --predictions.output, or pass "
                              "--predictions.overwrite true to replace it")


class PredictionWriter(BasePredictionWriter):
    """What ``mmtab predict`` writes.

    Args:
        output: a .csv or .parquet file for the predictions (input columns, ``prediction``,
            ``prob_<class>``, and ``loss`` when the rows have the target).
        overwrite: replace `output` if it exists (otherwise the run stops before predicting).
        top_losses: print this many rows with the highest loss (needs labelled rows).
        head: which head predicts: ``fusion`` (the fused model), ``tabular`` or ``text`` (a branch's
            own head, which a model with two branches trains beside the fusion), or ``best``: the
            fusion, unless a branch alone beat it on validation by more than noise (the
            checkpoint's modality report, which fit printed, decides).
    """

    def __init__(self, output: str | None = None, overwrite: bool = False, top_losses: int = 0,
                 head: Literal["fusion", "tabular", "text", "best"] = "fusion") -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.overwrite = overwrite
        self.top_losses = top_losses
        self.head = head

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.output is None and not self.top_losses:
            raise ConfigError("mmtab predict needs --predictions.output FILE (.csv or .parquet) "
                             "and/or --predictions.top_losses N")
        if self.output is not None:  # fail before the work, not after it
            check_writable(Path(self.output), overwrite=self.overwrite)
        chosen = pl_module.select_prediction_head(self.head)
        if self.head != "fusion":
            print(f"mmtab: predicting with the {chosen} head" + (" (--predictions.head best)" if self.head == "best"
                                                                 else ""))

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        dm = trainer.datamodule
        table = prediction_table(predictions, dm.preprocessor, dm.split_frame("predict"))
        if self.output is not None:
            path = write_table(table, self.output, overwrite=self.overwrite)
            print(f"wrote {len(table)} predictions to {path}")
        if self.top_losses:
            with pd.option_context("display.width", 200, "display.max_columns", 30):
                print(f"top {self.top_losses} losses:\n{top_losses(table, self.top_losses)}")
