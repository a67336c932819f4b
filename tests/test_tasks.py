"""A task is one object: its loss, metrics, activation and prediction columns; nothing else in mmtab
compares task names."""

import logging
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mmtab.tasks import TASKS, get_task, infer_task

from .conftest import ROOT


def test_no_task_switch_outside_the_task_objects():
    comparison = r"task(\.name)?\s*(==|!=|\bin\b|\bnot in\b)\s*[\"'(\[{]"
    pattern = re.compile(comparison + r"|[\"'](binary|multiclass|ordinal|regression)[\"']")
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in sorted((ROOT / "mmtab").rglob("*.py")) if path.name != "tasks.py"
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, "task names compared outside mmtab/tasks.py:\n" + "\n".join(hits)


def test_classification_tasks():
    logits, target = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    binary = get_task("binary")
    torch.testing.assert_close(binary.loss(logits, target), F.cross_entropy(logits, target, reduction="none"))
    torch.testing.assert_close(binary.metric_inputs(logits), torch.softmax(logits, 1)[:, 1])
    columns = binary.prediction_columns(binary.activate(logits).numpy(), ["no", "yes"])
    assert list(columns) == ["prediction", "prob_no", "prob_yes"] and list(columns["prediction"]) == ["no", "yes"]
    assert set(binary.metrics(2).keys()) == {"accuracy", "auroc", "f1"}
    assert binary.class_problems(["a", "b", "c"], "y") and not binary.class_problems(["a", "b"], "y")
    assert get_task("multiclass").class_problems(["a"], "y")
    codes, problems = binary.encode_target(pd.Series(["yes", "maybe"], name="y"), ["no", "yes"])
    assert codes[0] == 1 and "'maybe'" in problems[0] and "'y'" in problems[0]


def test_regression_task():
    task = get_task("regression")
    out = torch.tensor([[1.0], [3.0]])
    assert task.n_outputs(n_classes=0) == 1 and task.loss(out, torch.tensor([2.0, 2.0])).tolist() == [1, 1]
    assert task.prediction_columns(task.activate(out).numpy(), []) == {"prediction": pytest.approx(np.array([1, 3]))}
    assert set(task.metrics(1).keys()) == {"mae", "rmse", "r2"}
    values, problems = task.encode_target(pd.Series([1.5, "high"], name="price"), [])
    assert values[0] == 1.5 and "'high'" in problems[0]


def test_every_task_name_round_trips_and_unknown_names_are_refused():
    assert all(get_task(name).name == name for name in TASKS)
    with pytest.raises(ValueError, match="unknown task 'multilabel'"):
        get_task("multilabel")
    assert infer_task(pd.Series([0.5, 1.25, 3.0])) == "regression"


def test_a_positive_target_predicted_below_zero_is_warned_about(caplog):
    """A squared-error model knows no floor: where every training target was at least 0, predictions
    below 0 get one warning that says how many and what to do."""
    from mmtab import TabularTextDataModule
    from mmtab.predict import prediction_table

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "price": rng.exponential(size=200)})
    dm = TabularTextDataModule.from_frame(frame, target="price", continuous_cols=["x"], task="regression")
    pre = dm.preprocessor
    assert pre.target_scaling.positive
    rows = frame.head(3)
    mmtab_log = logging.getLogger("mmtab")
    mmtab_log.addHandler(caplog.handler)  # the command line's setup stops mmtab's records at its own handler
    try:
        table = prediction_table([{"output": torch.tensor([0.5, -0.25, -2.0])}], pre, rows)
        assert table["prediction"].tolist() == [0.5, -0.25, -2.0]  # warned, not changed
        assert "2 of 3 predictions are below 0 (lowest -2)" in caplog.text and "target_transform log1p" in caplog.text
        caplog.clear()
        prediction_table([{"output": torch.tensor([0.5, 0.1, 2.0])}], pre, rows)
        assert "below 0" not in caplog.text
    finally:
        mmtab_log.removeHandler(caplog.handler)
