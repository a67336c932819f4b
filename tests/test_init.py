"""kaiming and LSUV: what they promise, on real rows; never on a resumed run or the text encoder."""

import math

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mmtab import ConfigError, FusionModel, GeneralRelu, MultimodalModule, TabularMLP
from mmtab.diagnostics.init import Initialize, activation_mean_std, kaiming_init, lsuv_init, relu_pairs

from .conftest import adult_datamodule, quiet_trainer


def deep_narrow(dm, activation=None) -> MultimodalModule:
    """The init study's net: 10 hidden layers of 40 units without BatchNorm, where init matters."""
    net = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=[40] * 10, bn=False,
                                                                 activation=activation))
    return MultimodalModule(net, task=dm.fitted_task, lr=1e-2)


def test_kaiming_gives_each_linear_he_s_weight_std(adult_sample):
    torch.manual_seed(0)
    dm = adult_datamodule(adult_sample)
    net = FusionModel(n_outputs=2, tabular=TabularMLP(**dm.tabular_dims, layers=[400, 300, 200]))
    out_before = net.head.out.weight.clone()
    kaiming_init(net.tabular)
    for name, (linear, _) in relu_pairs(net.tabular).items():
        fan_in = linear.weight.shape[1]
        assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.03), name
    assert torch.equal(out_before, net.head.out.weight)  # the output layer keeps its init


def test_lsuv_leaves_every_layer_within_tolerance_on_a_fresh_training_batch(adult):
    torch.manual_seed(0)
    dm = adult_datamodule(adult, batch_size=2048)
    module = deep_narrow(dm, activation=lambda: GeneralRelu(leak=0.1, sub=0.4))
    loader = iter(dm.train_dataloader())
    report = lsuv_init(module.net, ["tabular"], [next(loader)], tolerance=0.05)
    assert len(report) == 10 and all(r.centred for r in report)
    assert report[-1].std_before < 0.5  # PyTorch's default init shrinks activations layer after layer
    fresh = [next(loader)]
    for name, (_, act) in relu_pairs(module.net.tabular).items():
        mean, std = activation_mean_std(module.net.eval(), act, fresh)
        assert abs(mean) < 0.1 and abs(std - 1) < 0.1, (name, mean, std)


def test_init_runs_before_the_first_step_and_never_on_a_resumed_run(adult_sample, tmp_path):
    dm = adult_datamodule(adult_sample)
    first = Initialize({"tabular": "lsuv", "head": "kaiming"})

    class StopAfterEpoch0(pl.Callback):  # the run is interrupted; its resume keeps max_epochs (the schedule)
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = True

    quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1, enable_checkpointing=True,
                  callbacks=[first, StopAfterEpoch0(), ModelCheckpoint(dirpath=tmp_path, save_last=True)]
                  ).fit(deep_narrow(dm), dm)
    assert first.applied and first.report

    resumed = deep_narrow(dm)
    again = Initialize({"tabular": "lsuv"})

    class AtStart(Initialize):  # sees the weights the first step will use
        def on_train_start(self, trainer, pl_module):
            self.weights = {k: v.clone() for k, v in pl_module.net.state_dict().items() if "weight" in k}

    probe = AtStart({})
    quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1,
                  callbacks=[again, probe]).fit(resumed, dm, ckpt_path=str(tmp_path / "last.ckpt"))
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert not again.applied
    assert all(torch.equal(v, saved[f"net.{k}"]) for k, v in probe.weights.items())


def test_the_pretrained_encoder_cannot_be_initialised():
    with pytest.raises(ConfigError, match="the text branch is a pretrained encoder"):
        Initialize({"text": "kaiming"})
