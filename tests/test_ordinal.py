"""The ordinal task (CORN): probabilities that respect order, a loss that is the class's exact
negative log-likelihood, and a model that learns an ordered target from a real table."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmtab import predict_frame
from mmtab.tasks import get_task

from .conftest import ADULT_CAT, ADULT_CONT, quiet_trainer, tabular_module

ORDINAL = get_task("ordinal")


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 6)),
              elements=st.floats(-30, 30, width=32)), st.data())
def test_probabilities_respect_order_and_the_loss_is_their_log_likelihood(logits, data):
    output = torch.from_numpy(logits)
    k = output.shape[1] + 1
    target = torch.tensor(data.draw(st.lists(st.integers(0, k - 1), min_size=len(output), max_size=len(output))))
    p = ORDINAL.activate(output)
    assert p.shape == (len(output), k) and torch.all(p >= -1e-6)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(len(output)))
    above = 1 - torch.cumsum(p, dim=1)[:, :-1]
    assert torch.all(above[:, 1:] <= above[:, :-1] + 1e-6)  # P(y > k) never rises with k
    nll = -torch.log(p[torch.arange(len(output)), target].double().clamp_min(1e-300))
    finite = nll < 80  # where float32 can still hold the class's probability
    torch.testing.assert_close(ORDINAL.loss(output, target).double()[finite], nll[finite], atol=1e-4, rtol=1e-4)
    median = ORDINAL.metric_inputs(output)
    assert torch.all((0 <= median) & (median < k))


def test_an_ordinal_target_is_learned_and_scored_with_qwk(adult_sample, tmp_path):
    """Years of education (16 ordered levels) from the rest of the census row ('education', its
    name, left out)."""
    from mmtab import TabularTextDataModule

    frame = adult_sample.assign(years=adult_sample["educational-num"])
    dm = TabularTextDataModule.from_frame(frame, target="years", task="ordinal", batch_size=128, seed=0,
                                          categorical_cols=[c for c in ADULT_CAT if c != "education"] + ["income"],
                                          continuous_cols=[c for c in ADULT_CONT if c != "educational-num"])
    assert dm.n_outputs == dm.preprocessor.task.n_outputs(16) == 15
    module = tabular_module(dm, class_weights=[1.0] * 16)
    trainer = quiet_trainer(max_epochs=4, default_root_dir=tmp_path, enable_checkpointing=True)
    trainer.fit(module, dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"val_qwk", "val_accuracy", "val_mae", "val_loss"} <= metrics.keys()
    assert metrics["val_qwk"] > 0.3  # a constant or random guess scores about 0
    assert metrics["val_mae"] < 2.0
    valid = dm.split_frame("valid")
    table = predict_frame(module, dm.preprocessor, valid)
    probs = table[[f"prob_{c}" for c in dm.preprocessor.classes]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    accuracy = float((table["prediction"].to_numpy() == valid["years"].to_numpy()).mean())
    assert abs(accuracy - metrics["val_accuracy"]) < 1e-6  # predict and validate agree


def test_ordered_classes_learned_as_multiclass_report_the_same_qwk_as_their_predictions(adult_sample, tmp_path):
    """`model.ordered_classes` with a multiclass target: val_qwk is the quadratic weighted kappa of
    the predicted (most probable) classes, as scikit-learn computes it on the predictions."""
    import pytest
    from sklearn.metrics import cohen_kappa_score

    from mmtab import ConfigError, TabularTextDataModule

    frame = adult_sample.assign(years=adult_sample["educational-num"].clip(8, 14))  # 7 ordered levels
    dm = TabularTextDataModule.from_frame(frame, target="years", task="multiclass", batch_size=128, seed=0,
                                          categorical_cols=[c for c in ADULT_CAT if c != "education"] + ["income"],
                                          continuous_cols=[c for c in ADULT_CONT if c != "educational-num"])
    module = tabular_module(dm, ordered_classes=True)
    trainer = quiet_trainer(max_epochs=3, default_root_dir=tmp_path)
    trainer.fit(module, dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert {"val_qwk", "val_accuracy", "val_auroc"} <= metrics.keys()
    valid = dm.split_frame("valid")
    table = predict_frame(module, dm.preprocessor, valid)
    expected = cohen_kappa_score(valid["years"], table["prediction"].astype(int), weights="quadratic")
    assert metrics["val_qwk"] == pytest.approx(expected, abs=1e-5) and expected > 0.2
    with pytest.raises(ConfigError, match="model.ordered_classes: a regression target has no classes to order"):
        get_task("regression").metrics(1, ordered=True)
    binary = get_task("binary").metrics(2, ordered=True)  # two classes: qwk is Cohen's kappa
    p, y = torch.tensor([0.9, 0.2, 0.7, 0.4]), torch.tensor([1, 0, 0, 0])
    assert float(binary(p, y)["qwk"]) == pytest.approx(cohen_kappa_score(y, (p > 0.5).int(), weights="quadratic"))
