"""Which rows validate: a stratified share, a column that names each row's split, or another file;
and which rows test, for k-fold cross-validation.

One of ``valid_pct``, ``split_col`` and ``valid_path`` chooses the validation rows; `validation_choice`
refuses two at once. With ``folds``, fold ``fold`` of the table is the test split and the validation
rows (where the best epoch is chosen) are a share of the other folds, so a fold's score is never
measured on the rows that chose its epoch. The split is a function of the rows and the seed alone, so a
resumed or repeated run validates on the same rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mmtab.data.columns import did_you_mean
from mmtab.errors import ConfigError, DataValidationError, first_values

DEFAULT_VALID_PCT = 0.2
SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "val": "valid", "test": "test"}


def validation_choice(valid_pct: float | None, split_col: str | None, valid_path: str | None) -> float:
    """The share of rows to hold out (used when neither `split_col` nor `valid_path` is given); more
    than one way of choosing the validation rows is a `ConfigError`."""
    given = [name for name, value in (("valid_pct", valid_pct), ("split_col", split_col),
                                      ("valid_path", valid_path)) if value is not None]
    if len(given) > 1:
        raise ConfigError(f"data.{' and data.'.join(given)} each choose the validation rows: keep one of them "
                          "and drop the other" + ("s" if len(given) > 2 else ""))
    valid_pct = DEFAULT_VALID_PCT if valid_pct is None else valid_pct
    if not 0.0 < valid_pct < 1.0:
        raise ConfigError(f"data.valid_pct must be between 0 and 1, got {valid_pct}")
    return valid_pct


def stratified_split(labels: pd.Series | None, n: int, valid_pct: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows: `valid_pct` of each class (of all rows if `labels` is None).

    A class with 2 or more rows has at least one in each split, however rare: else a rare class's rows
    all land in training and a metric that needs it (AUROC, a macro F1) has nothing to measure. A
    class of one row stays in training, where it can be learned.
    """
    rng = np.random.default_rng(seed)
    is_valid = np.zeros(n, dtype=bool)
    if labels is None:
        groups = [np.arange(n)]
    else:
        codes = pd.factorize(labels)[0]
        groups = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]
    for rows in groups:
        k = int(round(valid_pct * len(rows)))
        if labels is not None and len(rows) >= 2:
            k = min(max(k, 1), len(rows) - 1)
        is_valid[rng.permutation(rows)[:k]] = True
    return is_valid


def check_folds(folds: int | None, fold: int, split_col: str | None, valid_path: str | None,
                test_path: str | None) -> None:
    """`folds` and `fold` make sense together and with the other split options (a `ConfigError` if not)."""
    if folds is None:
        return
    if folds < 2:
        raise ConfigError(f"data.folds must be at least 2, got {folds}")
    if not 0 <= fold < folds:
        raise ConfigError(f"data.fold must be one of 0..{folds - 1} (data.folds is {folds}), got {fold}")
    given = [name for name, value in (("split_col", split_col), ("valid_path", valid_path),
                                      ("test_path", test_path)) if value is not None]
    if given:
        raise ConfigError(f"data.folds chooses the test rows and takes the validation rows from the other folds; "
                          f"data.{' and data.'.join(given)} choose rows too: set {' and '.join(given)} to null "
                          f"(--data.{given[0]} null)")


def fold_of_rows(labels: pd.Series | None, n: int, folds: int, seed: int) -> np.ndarray:
    """Each row's fold (0..folds-1): every class spread evenly over the folds (all rows if `labels` is
    None), in an order fixed by `seed`."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(n, dtype=np.int64)
    if labels is None:
        groups = [np.arange(n)]
    else:
        codes = pd.factorize(labels)[0]
        groups = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)]
    start = 0  # each class continues where the last left off, so the folds' sizes differ by one at most
    for rows in groups:
        fold[rng.permutation(rows)] = (start + np.arange(len(rows))) % folds
        start = (start + len(rows)) % folds
    return fold


def split_by_column(df: pd.DataFrame, col: str, where: str) -> dict[str, pd.DataFrame]:
    """train / valid (/ test) frames by the value of `col` in each row (train, valid or validation or val, test)."""
    if col not in df.columns:
        raise DataValidationError([f"split_col {col!r} is not in the table{did_you_mean(col, df.columns)}"], where)
    names = df[col].astype(str).str.lower().map(SPLIT_NAMES)
    bad = df[col][names.isna()]
    if len(bad):
        raise DataValidationError([f"split_col {col!r} has values other than train/valid/test "
                                   f"({first_values(bad)})"], where)
    present = set(names)  # train and valid always (an empty one is reported), test when there is one
    return {name: df[names == name] for name in ("train", "valid", "test") if name != "test" or name in present}
