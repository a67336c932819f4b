"""What a table's target is: its task and, for classification, its classes, decided once from the training rows.

The data module decides it when it checks the splits and hands the decision to the preprocessor, which
keeps it (task and classes) as fitted state; a preprocessor fitted on its own decides it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from mmtab.tasks import Task, TaskName, get_task, infer_task


@dataclass(frozen=True)
class TargetDecision:
    """The task, the sorted training classes (empty for regression) and the problems found on the way."""

    task: Task
    classes: list[Any] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def decide_target(values: pd.Series, task: TaskName | None = None) -> TargetDecision:
    """The training rows' target column -> its task (as configured, else inferred) and its classes."""
    decided = get_task(task or infer_task(values))
    if not decided.classification:
        return TargetDecision(decided)
    try:
        classes = sorted(pd.unique(values.dropna()).tolist())
    except TypeError:  # e.g. 1 and "yes" in one column: no order, and surely a mistake
        kinds = sorted({type(v).__name__ for v in values.dropna()})
        return TargetDecision(decided, [], [f"target {values.name!r} mixes kinds of values ({', '.join(kinds)}): "
                                            "make every value the same kind (all text or all numbers)"])
    return TargetDecision(decided, classes, decided.class_problems(classes, str(values.name)))
