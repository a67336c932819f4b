"""Numeric preprocessing choices and numeric embeddings: what each does to a column, that the fitted
state survives a checkpoint, and that predict equals validate with each of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmtab import (
    ColumnSpec,
    ConfigError,
    MultimodalModule,
    PreprocessingOptions,
    TabularPreprocessor,
    TabularTextDataModule,
)
from mmtab.cli import MmtabCLI
from mmtab.data.scaling import ColumnScaling
from mmtab.models.tabular import TabularMLP, bin_edges
from mmtab.predict import predict_frame
from mmtab.training.checkpoints import load_checkpoint

from .conftest import ADULT_CAT, ADULT_CONT, ROOT

finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)


@settings(deadline=None)
@given(train=arrays(np.float64, st.integers(2, 300), elements=finite),
       new=arrays(np.float64, st.integers(1, 50), elements=st.floats(allow_nan=False, allow_infinity=False)))
@example(train=np.array([0.0, 2.2250738585e-311, 2.2250738585e-311]), new=np.array([0.0]))  # a subnormal IQR
@example(train=np.array([-4.94065646e-324, 2.22507386e-313]), new=np.array([0.0]))  # quantiles a subnormal apart
def test_every_scaling_is_monotone_finite_and_bounded_where_it_promises(train, new):
    for method in ("standard", "quantile", "robust"):
        scaling = ColumnScaling.fit(method, train)
        x = np.sort(np.concatenate([train, new]))
        z = scaling.transform(x)
        assert np.isfinite(z).all()
        assert (np.diff(z) >= -1e-9).all(), method  # order is kept: a larger value never scores lower
        if method == "quantile":
            assert np.abs(z).max() <= 5.3
        if method == "robust":
            assert np.abs(z).max() < 3.0 + 1e-9  # the smooth clip's bound


def test_quantile_makes_a_skewed_column_normal_and_keeps_ties_together(adult):
    gain = adult["capital-gain"].to_numpy(dtype=np.float64)  # 92% zeros, then up to 99,999
    z = ColumnScaling.fit("quantile", gain).transform(gain)
    assert np.unique(z[gain == 0]).size == 1  # every zero at the same place
    age = adult["age"].to_numpy(dtype=np.float64)
    za = ColumnScaling.fit("quantile", age).transform(age)
    assert abs(za.mean()) < 0.05 and 0.9 < za.std() < 1.1
    standard = ColumnScaling.fit("standard", gain).transform(gain)
    assert standard.max() > 13 and z.max() < 5.3  # the outliers that standardising leaves far out


def test_a_wrong_method_or_column_is_named_before_any_data_is_read():
    with pytest.raises(ConfigError, match="'quantil'"):
        TabularTextDataModule(path="nowhere.csv", target="y", continuous_cols=["a"], numeric_scaling="quantil")
    with pytest.raises(ConfigError, match="'b' is not one of data.continuous_cols"):
        TabularTextDataModule(path="nowhere.csv", target="y", continuous_cols=["a"],
                              numeric_scaling={"robust": ["b"]})


def test_the_fitted_scalings_survive_a_weights_only_checkpoint(adult_sample, tmp_path):
    spec = ColumnSpec("income", ADULT_CAT, ADULT_CONT)
    scaling = {"quantile": ["capital-gain", "capital-loss"], "robust": ["fnlwgt"]}
    pre = TabularPreprocessor(spec, options=PreprocessingOptions(numeric_scaling=scaling)).fit(adult_sample)
    torch.save(pre.state_dict(), tmp_path / "pre.pt")
    again = TabularPreprocessor.from_state_dict(torch.load(tmp_path / "pre.pt", weights_only=True))
    rows = adult_sample.sample(300, random_state=1)
    assert torch.equal(pre.transform(rows)["cont"], again.transform(rows)["cont"])
    methods = [s.method for s in again.scalings]
    assert methods == ["standard", "robust", "standard", "quantile", "quantile", "standard"]
    assert "quantile-normal" in again.summary() and "smooth clip" in again.summary()


def test_piecewise_bins_have_equal_training_counts_and_flags_get_one_bin():
    quantiles = np.quantile(np.random.default_rng(0).exponential(size=10_000), np.linspace(0, 1, 129))
    edges = bin_edges(quantiles.tolist(), 8)
    assert len(edges) == 9 and torch.all(edges[1:] > edges[:-1])
    assert bin_edges([0.0] * 100 + [1.0] * 29, 48).tolist() == [0.0, 1.0]
    assert bin_edges([2.0] * 129, 48).tolist() == [2.0, 3.0]  # a constant column: one bin, never an error
    with pytest.raises(ConfigError, match="cont_quantiles"):
        TabularMLP(cardinalities=[3], n_cont=2, numeric_embedding="piecewise")


CASES = [("quantile", "none"), ("robust", "periodic"),
         ({"quantile": ["capital-gain", "capital-loss"]}, "piecewise")]


@pytest.mark.parametrize(("scaling", "embedding"), CASES, ids=["quantile", "robust-periodic", "mixed-piecewise"])
def test_predict_equals_validate_with_each_scaling_and_embedding(scaling, embedding, adult_sample, tmp_path):
    data = tmp_path / "adult.parquet"
    adult_sample.to_parquet(data)
    common = [f"--config={ROOT / 'configs' / 'adult.yaml'}", f"--data.path={data}",
              f"--trainer.default_root_dir={tmp_path / 'runs'}", f"--data.numeric_scaling={scaling}",
              f"--model.net.tabular.numeric_embedding={embedding}"]
    MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, save_config_callback=None,
             args=["fit", *common, "--trainer.max_epochs=2", "--data.batch_size=256", "--trainer.logger=false"])
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, save_config_callback=None,
                   args=["validate", *common, f"--ckpt_path={ckpt}", "--trainer.logger=false"])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert metrics["val_auroc"] > 0.8  # it learned: two epochs on 3,200 rows
    module, pre = load_checkpoint(ckpt)  # a fresh model and preprocessing, from the file alone
    valid = cli.datamodule.frames["valid"]
    table = predict_frame(module, pre, valid)
    assert table["loss"].mean() == pytest.approx(metrics["val_loss"], rel=1e-5)
    assert (table["prediction"] == valid["income"]).mean() == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert module.net.tabular.numeric_embedding == embedding  # the model that was fitted, rebuilt
