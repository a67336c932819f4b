"""``compile: true`` (``torch.compile`` of the model in place): it trains, and its checkpoint is the
same file an uncompiled run writes, loadable without compiling. Slow: the compiler takes tens of
seconds on a CPU (and needs a C++ compiler)."""

import pytest
import torch

from .conftest import adult_datamodule, quiet_trainer, tabular_module


@pytest.mark.slow
def test_a_compiled_model_trains_and_checkpoints_under_its_own_keys(adult_sample, tmp_path):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm, compile=True)
    keys = set(module.state_dict())
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(module, dm)
    assert float(trainer.callback_metrics["val_auroc"]) > 0.8
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    assert set(torch.load(tmp_path / "c.ckpt", weights_only=True)["state_dict"]) == keys
