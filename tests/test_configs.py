"""Every shipped config parses, instantiates against its data, and trains a few steps, with the tiny
random BERT standing in for MiniLM (tests never need the real encoder)."""

from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from mmtab.cli import MmtabCLI
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.models.fusion_model import FusionModel
from mmtab.training.module import MultimodalModule

from .conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TEXT = "--model.init_args.model.init_args.text.init_args.pretrained"


def build(config: Path, tmp_path: Path, extra: list[str]) -> MmtabCLI:
    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=False,
                   save_config_callback=None,
                   args=["--config", str(config), "--trainer.logger=false", "--trainer.max_steps=2",
                         "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
                         f"--trainer.default_root_dir={tmp_path}", *extra])
    for callback in cli.trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            callback.dirpath = str(tmp_path / "checkpoints")  # never into the user's runs/
    return cli


@pytest.fixture(scope="module")
def tiny_text_checkpoint(tmp_path_factory, tiny_bert) -> str:
    tmp = tmp_path_factory.mktemp("text_config")
    cli = build(ROOT / "configs" / "reviews_text.yaml", tmp, [f"{TEXT}={tiny_bert}", f"--data.tokenizer={tiny_bert}",
                                                                "--data.max_length=32"])
    cli.trainer.fit(cli.model, cli.datamodule)
    path = tmp / "text.ckpt"
    cli.trainer.save_checkpoint(path)
    return str(path)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_config_instantiates_and_trains_a_step(config: Path, monkeypatch, tmp_path, tiny_bert, request):
    monkeypatch.chdir(ROOT)  # configs name their data relative to the project root
    raw = yaml.safe_load(config.read_text())
    extra = []
    if raw["data"].get("text_cols"):
        extra += [f"{TEXT}={tiny_bert}", f"--data.tokenizer={tiny_bert}", "--data.max_length=32"]
    if raw["model"]["init_args"].get("init_from"):
        extra.append(f"--model.init_args.init_from={request.getfixturevalue('tiny_text_checkpoint')}")
    cli = build(config, tmp_path, extra)
    assert isinstance(cli.model.model, FusionModel)
    assert cli.model.model.head.out.out_features == cli.datamodule.n_outputs  # linked from the data
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 2
