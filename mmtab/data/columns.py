"""Column roles and the checks that run on a table before any training starts.

Every problem found in a frame is collected and raised once, naming the column, the first
offending rows and what to do, so a user fixes their data in one pass rather than one error per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

_MAX_ROWS_SHOWN = 5


class DataValidationError(ValueError):
    """Raised with every problem found in a table, one per line."""

    def __init__(self, problems: list[str], where: str = "data") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {where}:\n{lines}")


@dataclass(frozen=True)
class ColumnSpec:
    """Which column plays which role. A column may hold one role only."""

    target: str
    categorical: list[str] = field(default_factory=list)
    continuous: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    weight: str | None = None

    @property
    def feature_columns(self) -> list[str]:
        return [*self.categorical, *self.continuous, *self.text]

    def role_problems(self) -> list[str]:
        """Problems with the spec itself (no data needed)."""
        problems: list[str] = []
        roles = {"target": [self.target], "categorical_cols": self.categorical,
                 "continuous_cols": self.continuous, "text_cols": self.text,
                 "weight_col": [self.weight] if self.weight else []}
        seen: dict[str, str] = {}
        for role, cols in roles.items():
            for col in cols:
                if col in seen:
                    problems.append(f"column {col!r} is listed in both {seen[col]} and {role}: give it one role")
                seen[col] = role
        if not self.feature_columns:
            problems.append("no feature columns: list at least one of categorical_cols, continuous_cols, text_cols")
        return problems

    def validate(self, df: pd.DataFrame, *, where: str, labelled: bool = True) -> None:
        """Check `df` against the spec; raise `DataValidationError` listing every problem.

        `labelled=False` is for prediction files, which need the features but not the target or
        weight columns.
        """
        problems = self.role_problems()
        if len(df) == 0:
            problems.append("the table has no rows")
        needed = list(self.feature_columns)
        if labelled:
            needed += [self.target] + ([self.weight] if self.weight else [])
        missing = [c for c in needed if c not in df.columns]
        for col in missing:
            hint = _closest(col, df.columns)
            problems.append(f"column {col!r} is not in the table{hint}")
        present = set(df.columns)
        for col in self.continuous:
            if col in present:
                problems += _numeric_problems(df, col, "continuous_cols",
                                              "convert it to numbers or list it under categorical_cols")
        if labelled and self.target in present:
            bad = _first_rows(df[self.target].isna())
            if bad:
                problems.append(f"target column {self.target!r} has missing values (first rows: {bad}): "
                                "drop those rows or fill them")
        if labelled and self.weight and self.weight in present:
            numeric = _numeric_problems(df, self.weight, "weight_col", "weights must be numbers >= 0")
            problems += numeric
            if not numeric:
                w = pd.to_numeric(df[self.weight])
                bad = _first_rows(w.isna() | ~np.isfinite(w.to_numpy(dtype=float, na_value=np.nan)))
                if bad:
                    problems.append(f"weight column {self.weight!r} has missing or infinite values "
                                    f"(first rows: {bad}): weights must be finite numbers >= 0")
                bad = _first_rows(w < 0)
                if bad:
                    problems.append(f"weight column {self.weight!r} has negative values (first rows: {bad}): "
                                    "weights must be >= 0")
        if problems:
            raise DataValidationError(problems, where)


def _numeric_problems(df: pd.DataFrame, col: str, role: str, fix: str) -> list[str]:
    s = df[col]
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return []
    converted = pd.to_numeric(s, errors="coerce")
    bad = s.notna() & converted.isna()
    if not bad.any():
        return []
    examples = ", ".join(f"row {i}: {v!r}" for i, v in s[bad].head(_MAX_ROWS_SHOWN).items())
    return [f"column {col!r} in {role} has non-numeric values ({examples}): {fix}"]


def _first_rows(mask: pd.Series) -> str:
    idx = list(mask[mask].index[:_MAX_ROWS_SHOWN])
    if not idx:
        return ""
    more = int(mask.sum()) - len(idx)
    return ", ".join(map(str, idx)) + (f" and {more} more" if more > 0 else "")


def _closest(name: str, columns: pd.Index) -> str:
    import difflib

    match = difflib.get_close_matches(name, [str(c) for c in columns], n=1)
    return f" (did you mean {match[0]!r}?)" if match else f" (columns are: {', '.join(map(str, columns))})"
