"""Column roles and the checks that run on a table before any training starts.

Every problem found in a frame is collected and raised once, naming the column, the first
offending rows and what to do, so a user fixes their data in one pass rather than one error per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mmtab.data.values import date_part_names, to_dates, to_numbers
from mmtab.errors import MAX_ROWS_SHOWN, DataValidationError


@dataclass(frozen=True)
class ColumnSpec:
    """Which column plays which role. A column may hold one role only."""

    target: str
    categorical: list[str] = field(default_factory=list)
    continuous: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    weight: str | None = None
    date: list[str] = field(default_factory=list)

    @property
    def feature_columns(self) -> list[str]:
        return [*self.categorical, *self.continuous, *self.text, *self.date]

    def expanded(self) -> ColumnSpec:
        """The spec the model's inputs follow: each date column as its parts (`with_date_parts`), its
        days a continuous input and its month and weekday categorical ones."""
        parts = [date_part_names(col) for col in self.date]
        return ColumnSpec(target=self.target, categorical=[*self.categorical, *(p[k] for p in parts
                                                                                for k in ("month", "weekday"))],
                          continuous=[*self.continuous, *(p["days"] for p in parts)], text=list(self.text),
                          weight=self.weight)

    def columns(self, *, labelled: bool = True) -> list[str]:
        """The columns a table needs: the features, and with `labelled` the target and weight."""
        return self.feature_columns + ([self.target, *([self.weight] if self.weight else [])] if labelled else [])

    def role_problems(self) -> list[str]:
        """Problems with the spec itself (no data needed)."""
        problems: list[str] = []
        roles = {"target": [self.target], "categorical_cols": self.categorical,
                 "continuous_cols": self.continuous, "text_cols": self.text, "date_cols": self.date,
                 "weight_col": [self.weight] if self.weight else []}
        seen: dict[str, str] = {}
        for role, cols in roles.items():
            for col in cols:
                if col in seen:
                    problems.append(f"column {col!r} is listed in both {seen[col]} and {role}: give it one role")
                seen[col] = role
        if not self.feature_columns:
            problems.append("no feature columns: list at least one of categorical_cols, continuous_cols, text_cols, "
                            "date_cols")
        return problems

    def validate(self, df: pd.DataFrame, *, where: str, labelled: bool = True) -> None:
        """Check `df` against the spec; raise `DataValidationError` listing every problem.

        `labelled=False` is for prediction files, which need the features but not the target or
        weight columns.
        """
        problems = self.role_problems() + self.problems(df, labelled=labelled)
        if problems:
            raise DataValidationError(problems, where)

    def problems(self, df: pd.DataFrame, *, labelled: bool = True) -> list[str]:
        """Every problem of one table's columns and values (the spec's own problems apart)."""
        problems: list[str] = []
        if len(df) == 0:
            problems.append("the table has no rows")
        for col in (c for c in self.columns(labelled=labelled) if c not in df.columns):
            problems.append(f"column {col!r} is not in the table{did_you_mean(col, df.columns)}")
        present = set(df.columns)
        for col in (c for c in self.continuous if c in present):
            problems += _numeric_problems(df, col, "continuous_cols",
                                          "convert it to numbers or list it under categorical_cols")
        for col in (c for c in self.date if c in present):
            not_dates = df[col].notna() & to_dates(df[col]).isna()
            if not_dates.any():
                problems.append(f"column {col!r} in date_cols has values that are not dates "
                                f"({_examples(df[col], not_dates)}): fix them, leave them empty, or list the column "
                                "under categorical_cols")
        if labelled and self.target in present:
            bad = _first_rows(df[self.target].isna())
            if bad:
                problems.append(f"target column {self.target!r} has missing values (first rows: {bad}): "
                                "drop those rows or fill them")
        if labelled and self.weight and self.weight in present:
            problems += _weight_problems(df, self.weight)
        return problems


def _weight_problems(df: pd.DataFrame, col: str) -> list[str]:
    numeric = _numeric_problems(df, col, "weight_col", "weights must be numbers >= 0", check_inf=False,
                                numbers_as_text=False)
    if numeric:
        return numeric
    w = pd.to_numeric(df[col]).astype("float64")
    problems = []
    bad = _first_rows(w.isna() | np.isinf(w))
    if bad:
        problems.append(f"weight column {col!r} has missing or infinite values (first rows: {bad}): "
                        "weights must be finite numbers >= 0")
    bad = _first_rows(w < 0)
    if bad:
        problems.append(f"weight column {col!r} has negative values (first rows: {bad}): weights must be >= 0")
    if len(w) and not problems and not (w > 0).any():
        problems.append(f"weight column {col!r} is 0 in every row: nothing would be learned from (or measured "
                        "on) these rows; give some rows a positive weight")
    return problems


def _numeric_problems(df: pd.DataFrame, col: str, role: str, fix: str, *, check_inf: bool = True,
                      numbers_as_text: bool = True) -> list[str]:
    """Strings that are not numbers (`numbers_as_text`: read as `to_numbers` reads them), and
    infinities (which would turn every loss into NaN)."""
    s = df[col]
    if pd.api.types.is_bool_dtype(s):
        return []
    converted = to_numbers(s) if numbers_as_text else pd.to_numeric(s, errors="coerce")
    not_numbers = s.notna() & converted.isna()
    if not_numbers.any():
        return [f"column {col!r} in {role} has non-numeric values ({_examples(s, not_numbers)}): {fix}"]
    infinite = np.isinf(converted.astype("float64"))
    if check_inf and infinite.any():
        return [f"column {col!r} in {role} has infinite values ({_examples(s, infinite)}): replace them with "
                "finite numbers, or leave them empty to be filled with the training median"]
    return []


def _examples(values: pd.Series, mask: pd.Series) -> str:
    return ", ".join(f"row {i}: {v!r}" for i, v in values[mask].head(MAX_ROWS_SHOWN).items())


def _first_rows(mask: pd.Series) -> str:
    idx = list(mask[mask].index[:MAX_ROWS_SHOWN])
    if not idx:
        return ""
    more = int(mask.sum()) - len(idx)
    return ", ".join(map(str, idx)) + (f" and {more} more" if more > 0 else "")


def did_you_mean(name: str, columns: pd.Index) -> str:
    import difflib

    match = difflib.get_close_matches(name, [str(c) for c in columns], n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" (columns are: {', '.join(map(str, columns))})"
