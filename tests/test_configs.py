"""Every shipped config parses, instantiates against its data, and runs a training step."""

from pathlib import Path

import pytest

from mmtab.cli import MmtabCLI
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.models.fusion_model import FusionModel
from mmtab.training.module import MultimodalModule

from .conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_instantiates_and_trains_a_step(config: Path, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)  # configs name their data relative to the project root
    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=False,
                   save_config_callback=None,
                   args=["--config", str(config), "--trainer.logger=false", "--trainer.enable_checkpointing=false",
                         "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
                         "--trainer.enable_progress_bar=false",
                         f"--trainer.default_root_dir={tmp_path}"])
    assert isinstance(cli.model.model, FusionModel)
    head = cli.model.model.head.out
    assert head.out_features == cli.datamodule.n_outputs  # linked from the data, not typed in the config
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 2
