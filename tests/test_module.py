import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from mmtab import ConfigError, FusionModel, MultimodalModule, TabularMLP, TabularTextDataModule

from .conftest import ROOT, adult_datamodule, quiet_trainer, tabular_module


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_loss_falls_on_real_rows(adult_sample):
    dm = adult_datamodule(adult_sample, batch_size=128)
    recorder = LossRecorder()
    quiet_trainer(max_steps=30, callbacks=[recorder]).fit(tabular_module(dm), dm)
    first, last = sum(recorder.losses[:5]) / 5, sum(recorder.losses[-5:]) / 5
    assert last < 0.75 * first, recorder.losses


def test_every_trainable_parameter_gets_a_gradient(adult_sample):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm, layers=(16, 8))
    batch = dm.table("train")[torch.arange(128)]
    _, losses, weights = module.per_sample_losses(batch)
    losses.mean().backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, f"parameters without a gradient: {missing}"


def test_a_frozen_branch_is_bit_identical_after_training(adult_sample):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm, parts={"tabular": {"frozen": True}})
    trainable = {n for n, p in module.net.named_parameters() if p.requires_grad}
    assert trainable == {"head.out.weight", "head.out.bias"}
    before = {k: v.clone() for k, v in module.net.tabular.state_dict().items()}  # weights and BN buffers
    head_before = module.net.head.out.weight.detach().clone()
    quiet_trainer(max_steps=5).fit(module, dm)
    after = module.net.tabular.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k],
                                                                                                        after[k])]
    assert not module.net.tabular.training  # eval mode survives the trainer's model.train()
    assert not torch.equal(head_before, module.net.head.out.weight)


def test_frozen_state_travels_in_the_state_dict(adult_sample):
    dm = adult_datamodule(adult_sample)
    frozen = tabular_module(dm, parts={"tabular": {"frozen": True}})
    fresh = tabular_module(dm)
    fresh.load_state_dict(frozen.state_dict())
    assert fresh.net.frozen == {"tabular"}
    assert not any(p.requires_grad for p in fresh.net.tabular.parameters())


def test_regression_with_y_range_learns_california_housing():
    frame = pd.read_parquet(ROOT / "data" / "california_housing.parquet").sample(4000, random_state=0)
    dm = TabularTextDataModule.from_frame(frame, target="MedHouseVal", continuous_cols=list(frame.columns[:-1]),
                                          batch_size=128, seed=0)
    assert dm.fitted_task == "regression" and dm.n_outputs == 1
    model = FusionModel(n_outputs=1, tabular=TabularMLP(**dm.tabular_dims, layers=[64, 32]), y_range=(0.0, 5.5))
    module = MultimodalModule(model, task="regression", lr=1e-2, target_scaling=dm.target_scaling)
    trainer = quiet_trainer(max_epochs=4)
    trainer.fit(module, dm)
    assert trainer.callback_metrics["val_r2"] > 0.5


def test_a_net_handed_to_a_second_module_keeps_its_y_range_in_the_target_s_units():
    scaling = {"mean": 2.0, "std": 0.5, "log1p": False}
    net = FusionModel(n_outputs=1, tabular=TabularMLP(cardinalities=[], n_cont=1, layers=[4]), y_range=(0.0, 5.0))
    for _ in range(2):  # the second module must not standardise the already standardised range
        MultimodalModule(net, task="regression", target_scaling=scaling)
        assert net.head.y_range == (0.0, 5.0) and net.head.output_range == pytest.approx((-4.0, 6.0))
    MultimodalModule(net, task="regression")  # a module without scaling: outputs in the target's units
    assert net.head.output_range == (0.0, 5.0)


@pytest.mark.parametrize("transform", ["none", "log1p"])
def test_a_target_in_the_hundreds_trains_without_y_range_and_predicts_in_its_units(transform):
    """Targets are standardised on the training rows, so no y_range is needed; the metrics and the
    predictions are in the target's own units (here thousands of dollars, about 15 to 500)."""
    from mmtab import predict_frame

    frame = pd.read_parquet(ROOT / "data" / "california_housing.parquet").sample(4000, random_state=0)
    frame = frame.assign(MedHouseVal=frame["MedHouseVal"] * 100)
    dm = TabularTextDataModule.from_frame(frame, target="MedHouseVal", continuous_cols=list(frame.columns[:-1]),
                                          batch_size=128, seed=0, target_transform=transform)
    model = FusionModel(n_outputs=1, tabular=TabularMLP(**dm.tabular_dims, layers=[64, 32]))
    module = MultimodalModule(model, task="regression", lr=1e-2, target_scaling=dm.target_scaling)
    trainer = quiet_trainer(max_epochs=4)
    trainer.fit(module, dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert metrics["val_r2"] > 0.5 and 20 < metrics["val_mae"] < 80  # mae in the target's units, not z-scores
    valid = dm.frames["valid"]
    predicted = predict_frame(module, dm.preprocessor, valid)["prediction"]
    assert abs(predicted.mean() - valid["MedHouseVal"].mean()) < 0.15 * valid["MedHouseVal"].mean()
    rmse = float(np.sqrt(((predicted - valid["MedHouseVal"]) ** 2).mean()))
    assert rmse == pytest.approx(metrics["val_rmse"], rel=1e-4)  # predict equals validate


def test_a_module_without_the_data_s_target_scaling_is_stopped(adult_sample):
    frame = pd.read_parquet(ROOT / "data" / "california_housing.parquet").sample(1000, random_state=0)
    dm = TabularTextDataModule.from_frame(frame, target="MedHouseVal", continuous_cols=list(frame.columns[:-1]))
    model = FusionModel(n_outputs=1, tabular=TabularMLP(**dm.tabular_dims, layers=[8]))
    with pytest.raises(ConfigError, match="target_scaling=datamodule.target_scaling"):
        quiet_trainer(max_steps=1).fit(MultimodalModule(model, task="regression"), dm)


def test_multiclass_target(adult_sample):
    dm = TabularTextDataModule.from_frame(adult_sample, target="race", categorical_cols=["occupation"],
                                          continuous_cols=["age"], batch_size=256)
    assert dm.fitted_task == "multiclass" and dm.n_outputs == 5
    trainer = quiet_trainer(limit_train_batches=5)
    trainer.fit(tabular_module(dm), dm)
    assert {"val_accuracy", "val_auroc", "val_f1"} <= set(trainer.callback_metrics)


def test_class_weights_must_match_the_outputs(adult_sample):
    with pytest.raises(ValueError, match="one weight per class"):
        tabular_module(adult_datamodule(adult_sample), class_weights=[1.0, 2.0, 3.0])


def test_the_training_loss_reaches_the_logger_every_few_steps(adult_sample, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    dm = adult_datamodule(adult_sample, batch_size=128)
    recorder = LossRecorder()
    quiet_trainer(max_steps=12, limit_val_batches=0, log_every_n_steps=4, callbacks=[recorder],
                  logger=CSVLogger(tmp_path, name="run")).fit(tabular_module(dm), dm)
    logged = pd.read_csv(next(tmp_path.rglob("metrics.csv"))).dropna(subset=["train_loss"])
    assert logged["step"].tolist() == [3, 7, 11]  # each the loss of that very step, not of an earlier one
    assert logged["train_loss"].tolist() == pytest.approx([recorder.losses[s] for s in (3, 7, 11)], rel=1e-6)
