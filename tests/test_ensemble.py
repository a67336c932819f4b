"""TabM-style ensembles (``TabularMLP(ensemble_size=k)``): each member trained on its own loss,
predictions the mean of the members', through fusion, checkpoints and predict."""

from __future__ import annotations

import pytest
import torch

from mmtab import ConfigError, FusionModel, MultimodalModule, TabularMLP, TabularTextDataModule
from mmtab.cli import MmtabCLI
from mmtab.predict import predict_frame
from mmtab.tasks import get_task
from mmtab.training.checkpoints import load_checkpoint

from .conftest import ROOT, adult_datamodule, fusion_module, quiet_trainer, reviews_datamodule

TARGETS = {"binary": torch.tensor([0, 1, 1]), "multiclass": torch.tensor([0, 2, 1]),
           "ordinal": torch.tensor([0, 3, 2]), "regression": torch.tensor([0.5, -1.0, 2.0])}
N_OUTPUTS = {"binary": 2, "multiclass": 3, "ordinal": 3, "regression": 1}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_an_ensemble_s_loss_is_its_members_mean_and_its_prediction_their_mean(name):
    task, target = get_task(name), TARGETS[name]
    output = torch.randn(3, 5, N_OUTPUTS[name])  # (B, k, n_outputs)
    members = [output[:, j] for j in range(5)]
    torch.testing.assert_close(task.loss(output, target), torch.stack([task.loss(m, target) for m in members]).mean(0))
    torch.testing.assert_close(task.activate(output), torch.stack([task.activate(m) for m in members]).mean(0))
    if task.classification:  # still probabilities: members' probabilities averaged, not their logits
        torch.testing.assert_close(task.activate(output).sum(dim=1), torch.ones(3))


def test_members_start_different_and_the_head_has_one_output_layer_each():
    tab = TabularMLP(cardinalities=[5, 12], n_cont=3, layers=[32, 16], ensemble_size=4)
    net = FusionModel(n_outputs=2, tabular=tab)
    batch = {"cat": torch.tensor([[1, 4], [0, 11]]), "cont": torch.randn(2, 3)}
    out = net.eval()(batch)
    assert out.shape == (2, 4, 2)
    assert not torch.allclose(out[:, 0], out[:, 1])  # each member scales the inputs its own way
    assert net.head.out.weight.shape == (4, 16, 2)
    with pytest.raises(ConfigError, match="ensemble_size"):
        TabularMLP(cardinalities=[5], n_cont=1, ensemble_size=0)


def test_an_ensemble_learns_adult(adult_sample):
    dm = adult_datamodule(adult_sample)
    dm.setup("fit")
    torch.manual_seed(0)
    net = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=[64, 32], ensemble_size=8))
    module = MultimodalModule(net, task=dm.fitted_task, lr=1e-2)
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(module, dm)
    assert float(trainer.validate(module, dm, verbose=False)[0]["val_auroc"]) > 0.85


def test_a_fused_model_shares_the_text_features_with_every_member(reviews_sample, tiny_bert):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    dm.setup("fit")
    module = fusion_module(dm)
    net = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=[16], ensemble_size=3),
                      text=module.net.text, head_layers=[16])
    module = MultimodalModule(net, task=dm.fitted_task, lr=3e-3)
    quiet_trainer(max_steps=3, limit_val_batches=2).fit(module, dm)
    batch = next(iter(dm.val_dataloader()))
    assert net.eval()(batch).shape == (len(batch["target"]), 3, 2)


def test_predict_equals_validate_for_a_regression_ensemble_from_the_checkpoint_alone(tmp_path):
    common = [f"--config={ROOT / 'configs' / 'california_housing.yaml'}",
              f"--trainer.default_root_dir={tmp_path / 'runs'}", "--model.net.tabular.ensemble_size=4",
              "--model.net.tabular.layers=[32,32]", "--trainer.logger=false", "--trainer.enable_progress_bar=false"]
    MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, save_config_callback=None,
             args=["fit", *common, "--trainer.max_epochs=3"])
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, save_config_callback=None,
                   args=["validate", *common, f"--ckpt_path={ckpt}"])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    module, pre = load_checkpoint(ckpt)
    assert module.net.ensemble_size == 4
    valid = cli.datamodule.frames["valid"]
    table = predict_frame(module, pre, valid)
    assert metrics["val_r2"] > 0.4  # it learned, in the target's own units
    rmse = float(((table["prediction"] - valid["MedHouseVal"]) ** 2).mean() ** 0.5)
    assert rmse == pytest.approx(metrics["val_rmse"], rel=1e-4)
    assert table["loss"].mean() == pytest.approx(metrics["val_loss"], rel=1e-4)
