"""`mmtab explain` and `mmtab.explain`: column importance, the rows the text changed, calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import mmtab
from mmtab import ConcatFusion, FusionModel, MultimodalModule, TabularMLP, TabularTextDataModule, TextEncoder
from mmtab.errors import ConfigError
from mmtab.explanations.importance import model_columns
from mmtab.predict import predict_frame

from .conftest import REVIEW_CAT, REVIEW_CONT, REVIEW_TEXT, quiet_trainer, text_decides_datamodule


def synthetic(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """`decides` decides the target in the rows of group a, `decides_b` in group b; `noise` and
    `colour` are noise."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n)
    decides, decides_b = rng.normal(size=n), rng.normal(size=n)
    signal = np.where(group == "a", decides, decides_b)
    y = (signal + 0.3 * rng.normal(size=n) > 0).astype(int)
    return pd.DataFrame({"group": group, "decides": decides, "decides_b": decides_b, "noise": rng.normal(size=n),
                         "colour": rng.choice(["red", "green", "blue"], n), "w": 1.0, "y": y})


@pytest.fixture(scope="module")
def tabular_fit():
    frame = synthetic()
    dm = TabularTextDataModule.from_frame(frame, target="y", categorical_cols=["group", "colour"],
                                          continuous_cols=["decides", "decides_b", "noise"], weight_col="w",
                                          batch_size=128, seed=0)
    torch.manual_seed(0)
    net = FusionModel(n_outputs=2, tabular=TabularMLP(**dm.tabular_dims, layers=[64, 32]))
    module = MultimodalModule(net, task=dm.fitted_task, lr=1e-2, calibrate=True)
    quiet_trainer(max_epochs=8).fit(module, dm)
    return {"module": module.eval(), "pre": dm.preprocessor, "valid": dm.split_frame("valid")}


def test_the_deciding_column_ranks_first_and_noise_sits_at_zero(tabular_fit):
    result = mmtab.explain(tabular_fit["module"], tabular_fit["pre"], tabular_fit["valid"], repeats=5)
    table = result.importance.set_index("column")
    # `group` says which of the two decides, so it matters as much; the noise comes last
    assert result.importance["column"].iloc[0] in ("decides", "decides_b")
    assert set(result.importance["column"].iloc[-2:]) == {"noise", "colour"}
    assert table.loc["decides", "importance"] > 0.15 and table.loc["decides", "importance"] > 10 * table.loc[
        "decides", "std"]
    for noise in ("noise", "colour"):  # within its spread of zero (and small in any case)
        assert abs(table.loc[noise, "importance"]) <= max(2 * table.loc[noise, "std"], 0.005), table
    assert set(table.columns) >= {"importance", "std", "loss_increase", "loss_std", "kind"}
    assert result.scores["auroc"] > 0.9


def test_sample_weights_change_the_importance_as_they_change_the_loss(tabular_fit):
    valid = tabular_fit["valid"]
    def importance(rows: pd.DataFrame) -> pd.DataFrame:
        return mmtab.explain(tabular_fit["module"], tabular_fit["pre"], rows, repeats=3).importance.set_index("column")

    even = importance(valid)
    weighted = importance(valid.assign(w=np.where(valid["group"] == "a", 1.0, 0.0)))  # where decides_b decides: 0
    assert even.loc["decides_b", "loss_increase"] > 0.2
    assert abs(weighted.loc["decides_b", "loss_increase"]) < 0.02  # it moves no row that carries weight
    # half the rows weigh 0, none of them its own: its share of the loss doubles
    assert weighted.loc["decides", "loss_increase"] > 1.5 * even.loc["decides", "loss_increase"]


def test_calibration_never_changes_a_predicted_class_and_lowers_the_log_loss(tabular_fit):
    module, pre, valid = tabular_fit["module"], tabular_fit["pre"], tabular_fit["valid"]
    c = module.calibration
    assert c is not None and c["log_loss_after"] < c["log_loss_before"] and c["temperature"] != 1.0
    calibrated = predict_frame(module, pre, valid)
    module.calibration = None
    try:
        raw = predict_frame(module, pre, valid)
    finally:
        module.calibration = c
    assert (calibrated["prediction"] == raw["prediction"]).all()
    assert calibrated["loss"].mean() < raw["loss"].mean()
    assert not np.allclose(calibrated["prob_1"], raw["prob_1"])


def test_an_ordinal_prediction_keeps_its_uncalibrated_class(adult_sample):
    frame = adult_sample.assign(band=pd.cut(adult_sample["hours-per-week"], [0, 30, 40, 50, 100], labels=False))
    dm = TabularTextDataModule.from_frame(frame, target="band", task="ordinal", categorical_cols=["occupation"],
                                          continuous_cols=["age", "educational-num"], batch_size=256, seed=0)
    net = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=[32]))
    module = MultimodalModule(net, task="ordinal", lr=1e-2, calibrate=True)
    quiet_trainer(max_epochs=3).fit(module, dm)
    module.eval()
    calibrated = predict_frame(module, dm.preprocessor, dm.split_frame("valid"))
    c, module.calibration = module.calibration, None
    raw = predict_frame(module, dm.preprocessor, dm.split_frame("valid"))
    assert c["log_loss_after"] <= c["log_loss_before"]
    assert (calibrated["prediction"] == raw["prediction"]).all()


def test_calibration_is_for_classes():
    tab = TabularMLP(cardinalities=[3], n_cont=1, layers=[4])
    with pytest.raises(ConfigError, match="no probabilities to calibrate"):
        MultimodalModule(FusionModel(n_outputs=1, tabular=tab), task="regression", calibrate=True)


@pytest.fixture(scope="module")
def text_fit(tiny_bert, reviews_sample):
    """The target is written in the review text; the table is shuffled noise; the encoder is frozen."""
    dm = text_decides_datamodule(reviews_sample, tiny_bert)
    torch.manual_seed(0)
    net = FusionModel(n_outputs=2, tabular=TabularMLP(**dm.tabular_dims, layers=[16]),
                      text=TextEncoder(pretrained=tiny_bert, columns=dm.text_slots), fusion=ConcatFusion,
                      head_layers=[16])
    module = MultimodalModule(net, task=dm.fitted_task, lr=3e-3, parts={"text": {"frozen": True}})
    quiet_trainer(max_epochs=5).fit(module, dm)
    return {"module": module.eval(), "pre": dm.preprocessor, "valid": dm.split_frame("valid")}


def test_the_text_that_holds_the_target_ranks_first_from_cached_vectors(text_fit, tmp_path):
    module = text_fit["module"]
    calls = []
    hook = module.net.text.encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        result = mmtab.explain(module, text_fit["pre"], text_fit["valid"], output=tmp_path, repeats=3)
    finally:
        hook.remove()
    assert not calls  # every shuffle moved cached vectors; no text was encoded
    assert result.importance["column"].iloc[0] == "Review Text"
    assert result.importance["kind"].iloc[0] == "text" and result.importance["importance"].iloc[0] > 0.3
    # the rows whose prediction their text changed most, with their texts
    changes = result.text_changes
    assert {"Review Text", "prediction", "prediction_other_texts", "change"} <= set(changes.columns)
    assert changes["change"].is_monotonic_decreasing and changes["change"].iloc[0] > 0.2
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["importance.csv", "importance.png", "reliability.png", "text_changes.csv"]
    csv = pd.read_csv(tmp_path / "importance.csv")
    assert list(csv.columns[:4]) == ["column", "kind", "importance", "std"]
    with pytest.raises(ConfigError, match="already holds"):
        mmtab.explain(module, text_fit["pre"], text_fit["valid"], output=tmp_path)


def test_columns_are_the_users_columns(text_fit):
    names = [c.name for c in model_columns(text_fit["pre"])]
    assert names == [*REVIEW_CAT, *REVIEW_CONT, *REVIEW_TEXT]


def test_mmtab_explain_through_the_cli(tmp_path, adult_sample):
    from .test_cli import CONFIG
    from .test_cli import mmtab as run

    data = tmp_path / "adult.parquet"
    adult_sample.to_parquet(data)
    common = [f"--config={CONFIG}", f"--data.path={data}", f"--trainer.default_root_dir={tmp_path / 'runs'}"]
    run("fit", *common, "--trainer.max_epochs=2", "--data.batch_size=256")
    out = tmp_path / "why"
    proc = run("explain", *common, "--ckpt_path=best", f"--explain.output={out}", "--explain.repeats=2")
    assert "column importance (drop in auroc when shuffled)" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["importance.csv", "importance.png", "reliability.png"]
    table = pd.read_csv(out / "importance.csv")
    assert len(table) == 14 and table["importance"].iloc[0] > 0.01  # every adult column, the first one used
    again = run("explain", *common, "--ckpt_path=best", f"--explain.output={out}", check=False)
    assert again.returncode == 2 and "already holds" in again.stderr and "Traceback" not in again.stderr
    none = run("explain", *common, check=False)
    assert none.returncode == 2 and "needs the fitted model" in none.stderr
