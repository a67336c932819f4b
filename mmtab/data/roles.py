"""Each column's role in a table mmtab has not seen, decided from its values, with the reason said.

`infer_roles` is what ``mmtab init`` prints and writes into a config, and what ``mmtab fit`` uses when
a config names a table and its target but no columns. Every rule is a line here and a reason in the
table a user reads; nothing is decided that the user cannot see and change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mmtab.data.splits import SPLIT_NAMES
from mmtab.data.values import to_dates, to_numbers
from mmtab.tasks import TaskName, get_task, infer_task

CATEGORICAL_MAX_INT_LEVELS = 10  # whole numbers with this many levels or fewer are categories (a 1-5 grade)
TEXT_MIN_WORDS = 3.0  # mean words per value from which a string column is text
TEXT_MIN_DISTINCT = 0.3  # ... when at least this share of its values differ (else: categories of a few words)
NEAR_PERFECT = 0.9  # a column that alone explains this share of the target is left out as a leak
LEAK_SHARE = 0.5  # one that explains this share is flagged as a possible leak (kept) ...
LEAK_OVER_NEXT = 2.0  # ... when it is also this many times the next column's share
SAMPLE_ROWS = 50_000  # the rules read at most this many rows
PROBE_VALUES = 200  # a string column is tried as numbers, then as dates, on this many values first
READ_AS = 0.95  # ... and is numbers (dates) when this share of its values reads as such
DATE_MAX_WORDS = 4.0  # '2024-03-01', 'Mar 1, 2024 14:00 UTC': dates are a few words at most

WEIGHT_NAMES = {"weight", "weights", "sample_weight", "sample_weights"}
ID_NAME = re.compile(r"(^|[^a-z])(id|code|key)$", re.IGNORECASE)
BOOLEAN_WORDS = {"yes", "no", "true", "false", "y", "n", "t", "f"}


@dataclass(frozen=True)
class Role:
    """One column's decision: its `role` (``target``, ``categorical``, ``continuous``, ``text``,
    ``date``, ``weight``, ``split`` or ``left out``) and why, in words a user reads."""

    column: str
    role: str
    reason: str
    flagged: bool = False  # a possible leak, kept: the user decides


@dataclass(frozen=True)
class Roles:
    """Every column's decision, and the task decided from the target."""

    task: TaskName
    rows: int
    columns: list[Role]

    def names(self, role: str) -> list[str]:
        return [r.column for r in self.columns if r.role == role]

    def table(self) -> str:
        """The decisions as the aligned table ``mmtab init`` prints."""
        width = max(len(r.column) for r in self.columns)
        kind = max(len(r.role) for r in self.columns)
        return "\n".join(f"{r.column:<{width}}  {r.role:<{kind}}  {r.reason}" for r in self.columns)


def infer_roles(df: pd.DataFrame, target: str, task: TaskName | None = None) -> Roles:
    """Decide each column's role in `df` (read at most `SAMPLE_ROWS` rows)."""
    sample = df.sample(SAMPLE_ROWS, random_state=0) if len(df) > SAMPLE_ROWS else df
    y = sample[target]
    task = task or infer_task(y)
    decided = [Role(target, "target", _target_reason(y, task))]
    roles = [_role(sample[col], len(sample)) for col in sample.columns if col != target]
    decided += _leaks(sample, y, task, roles)
    return Roles(task=task, rows=len(df), columns=decided)


def _target_reason(y: pd.Series, task: TaskName) -> str:
    n = y.nunique()
    if not get_task(task).classification:
        return f"task {task}: numbers, {n} distinct values"
    shown = ", ".join(repr(v.item() if hasattr(v, "item") else v) for v in sorted(y.dropna().unique(), key=str)[:5])
    return f"task {task}: {n} classes ({shown}{', ...' if n > 5 else ''})"


def _role(values: pd.Series, n: int) -> Role:
    col = str(values.name)
    present = values.dropna()
    share = 1 - len(present) / n
    missing = "" if not share else f", {share:.0%} missing" if share >= 0.01 else f", {share:.1%} missing"
    if not len(present):
        return Role(col, "left out", "empty in every row")
    distinct = present.nunique()
    if distinct == 1:
        return Role(col, "left out", f"one value in every row ({present.iloc[0]!r}): it cannot help")
    if col.lower() in WEIGHT_NAMES and pd.api.types.is_numeric_dtype(present) and (present >= 0).all():
        return Role(col, "weight", "named like a weight, numbers >= 0: each row's weight in the loss and metrics")
    if not pd.api.types.is_numeric_dtype(present) and present.astype(str).str.lower().isin(SPLIT_NAMES).all():
        return Role(col, "split", f"values {sorted(present.astype(str).str.lower().unique())}: each row's split")
    if pd.api.types.is_bool_dtype(present):
        return Role(col, "categorical", f"true/false{missing}")
    if pd.api.types.is_datetime64_any_dtype(present):
        return _date_role(col, present, missing)
    if pd.api.types.is_numeric_dtype(present):
        return _numeric_role(col, present, distinct, n, missing)
    return _string_role(col, present.astype(str), distinct, n, missing)


def _numeric_role(col: str, present: pd.Series, distinct: int, n: int, missing: str) -> Role:
    whole = pd.api.types.is_integer_dtype(present) or bool(np.all(np.mod(present.to_numpy(float), 1) == 0))
    if whole and distinct == n:
        return Role(col, "left out", "a whole number unique to each row: an identifier, not a measurement")
    if whole and ID_NAME.search(col):
        return Role(col, "categorical", f"whole numbers named like an identifier: codes, {distinct} levels "
                                        f"(rare ones pooled){missing}")
    if whole and distinct <= CATEGORICAL_MAX_INT_LEVELS:
        return Role(col, "categorical", f"whole numbers with {distinct} levels{missing}")
    return Role(col, "continuous", f"numbers, {distinct} distinct{missing}")


def _string_role(col: str, present: pd.Series, distinct: int, n: int, missing: str) -> Role:
    words = float(present.str.split().str.len().mean())
    lowered = set(present.str.strip().str.lower().unique())
    if lowered <= BOOLEAN_WORDS:
        return Role(col, "categorical", f"yes/no written as text ({', '.join(sorted(lowered))}){missing}")
    probe = present.head(PROBE_VALUES)
    if to_numbers(probe).notna().mean() >= READ_AS:
        numbers = to_numbers(present)
        if present.str.match(r"^0\d").any() or ID_NAME.search(col):
            return Role(col, "categorical", f"digits with leading zeros or named like an identifier: codes, "
                                            f"{distinct} levels{missing}")
        if numbers.notna().mean() >= READ_AS:
            example = f"{present.iloc[0]!r} -> {numbers.iloc[0]:g}"
            plain = pd.to_numeric(probe, errors="coerce").notna().all()
            how = "numbers stored as text" if plain else f"numbers written as text, read as numbers ({example})"
            return Role(col, "continuous", f"{how}, {numbers.nunique()} distinct{missing}")
    if words <= DATE_MAX_WORDS and to_dates(probe).notna().mean() >= READ_AS:
        return _date_role(col, present, missing)
    if words >= TEXT_MIN_WORDS and distinct >= TEXT_MIN_DISTINCT * len(present):
        return Role(col, "text", f"{words:.1f} words per value, {distinct / len(present):.0%} distinct{missing}")
    if distinct == n:
        return Role(col, "left out", f"unique to each row, {words:.1f} words per value: an identifier")
    many = " (rare ones pooled)" if distinct > 100 else ""
    return Role(col, "categorical", f"{distinct} levels{many}, {words:.1f} words per value{missing}")


def _date_role(col: str, present: pd.Series, missing: str) -> Role:
    dates = to_dates(present).dropna()
    return Role(col, "date", f"dates from {dates.min():%Y-%m-%d} to {dates.max():%Y-%m-%d}: read as days since "
                             f"1970, month and weekday{missing}")


def _leaks(sample: pd.DataFrame, y: pd.Series, task: TaskName, roles: list[Role]) -> list[Role]:
    """The roles, with a column that alone explains nearly all of the target left out as a leak, and
    one that explains most of it, far more than any other, kept and flagged: a rating beside a
    recommendation is such a column, and so is a district's income beside its house prices (both
    about half), so only the user can tell a leak (written with the target or after it, absent when
    predicting) from a strong feature."""
    features = [r for r in roles if r.role in ("categorical", "continuous")]
    shares = {r.column: explained_share(sample[r.column], y, task) for r in features}
    out = []
    for r in roles:
        share = shares.get(r.column)
        others = max([s for c, s in shares.items() if c != r.column], default=0.0)
        if share is not None and share >= NEAR_PERFECT:
            r = Role(r.column, "left out", f"alone it explains {share:.0%} of the target: a leak (written with the "
                                           "target or after it?); if it is known when you predict, list it again")
        elif share is not None and share >= LEAK_SHARE and share >= LEAK_OVER_NEXT * others:
            r = Role(r.column, r.role, f"{r.reason}; CHECK: alone it explains {share:.0%} of the target (the next "
                                       f"column {others:.0%}): if it is written with the target or after it, leave "
                                       "it out", flagged=True)
        out.append(r)
    return out


def explained_share(x: pd.Series, y: pd.Series, task: TaskName) -> float:
    """How much of the target one column explains alone, from 0 to 1: each of its values (numbers in
    20 quantile bins) predicts the target's mean (regression: R²) or its majority class (the share of
    the majority-class baseline's errors it removes). Cross-fitted on two halves of the rows, each
    scored by the other's groups, so a column of many values on few rows does not explain by chance."""
    keep = y.notna().to_numpy()
    x, y = x[keep].reset_index(drop=True), y[keep].reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(x) and x.nunique() > 20:
        x = pd.qcut(x.rank(method="first"), 20, labels=False)
    groups = x.astype(object).where(x.notna(), "<missing>")
    half = np.random.default_rng(0).permutation(len(y)) % 2 == 0
    classification = get_task(task).classification
    values = y if classification else pd.to_numeric(y, errors="coerce").astype(float)
    fallback = values.mode().iloc[0] if classification else values.mean()
    predicted = pd.Series(index=values.index, dtype=object if classification else float)
    for fit, score in ((half, ~half), (~half, half)):
        by_group = (values[fit].groupby(groups[fit]).agg(lambda v: v.mode().iloc[0]) if classification
                    else values[fit].groupby(groups[fit]).mean())
        predicted[score] = groups[score].map(by_group).fillna(fallback).to_numpy()
    if classification:
        base = float((values != fallback).mean())
        return max(0.0, 1 - float((predicted != values).mean()) / base) if base else 0.0
    spread = float(((values - values.mean()) ** 2).sum())
    return max(0.0, 1 - float(((values - predicted.astype(float)) ** 2).sum()) / spread) if spread else 0.0
