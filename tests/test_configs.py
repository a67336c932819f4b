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


def build(config: Path, tmp_path: Path, extra: list[str]) -> MmtabCLI:
    model = yaml.safe_load(config.read_text())["model"]
    if "lora" in model.get("net", {}).get("text", {}):
        extra = ["--model.net.text.lora.last_layers=1", *extra]  # the tiny BERT has 2 layers, MiniLM 6
    if model.get("target_aware"):  # the adapter fit, as short as the model's own: a few rows, one epoch
        extra = ["--model.target_aware.max_epochs=1", "--model.target_aware.max_rows=100", *extra]
    if model.get("text_choice"):  # each candidate's fit one epoch long
        extra = ["--model.text_choice.max_epochs=1", *extra]
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
    cli = build(ROOT / "configs" / "reviews_text.yaml", tmp, [f"--data.text_model={tiny_bert}", "--data.max_length=32"])
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
        extra += [f"--data.text_model={tiny_bert}", "--data.max_length=32"]
    if raw["model"].get("init_from"):
        extra.append(f"--model.init_args.init_from={request.getfixturevalue('tiny_text_checkpoint')}")
    cli = build(config, tmp_path, extra)
    assert isinstance(cli.model.net, FusionModel)
    assert cli.model.net.head.out.out_features == cli.datamodule.n_outputs  # linked from the data
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.global_step == 2


TEXT_CONFIGS = [c for c in CONFIGS if yaml.safe_load(c.read_text())["data"].get("text_cols")]


@pytest.mark.parametrize("config", TEXT_CONFIGS, ids=[c.stem for c in TEXT_CONFIGS])
def test_a_text_config_names_its_text_model_once(config: Path, monkeypatch, tmp_path, tiny_bert):
    """The data's text model is linked into the text branch: the tokenizer and the encoder cannot differ,
    and naming the encoder on the model side as well is an error, not a silent override."""
    monkeypatch.chdir(ROOT)
    raw = yaml.safe_load(config.read_text())
    assert "pretrained" not in str(raw["model"]) and raw["data"]["text_model"]
    cli = build(config, tmp_path, [f"--data.text_model={tiny_bert}", "--data.max_length=32"])
    assert cli.model.net.text.pretrained == cli.datamodule.preprocessor.options.text_model == tiny_bert
    with pytest.raises(ValueError, match=r"model.net.text.pretrained is decided by the data \(data.text_model\)"):
        build(config, tmp_path, [f"--data.text_model={tiny_bert}", f"--model.net.text.pretrained={tiny_bert}"])


def test_a_text_only_checkpoint_reloads_from_its_own_config(tiny_text_checkpoint, reviews_sample):
    """A text-only model has no tabular branch for the data's cardinalities to land in: the config stored
    in the checkpoint has them only where the part exists, and rebuilds the same model."""
    import torch

    from mmtab import load_checkpoint

    module, pre = load_checkpoint(tiny_text_checkpoint)
    assert module.net.tabular is None and module.net.frozen == {"text"} and pre.task.name == "binary"
    state = torch.load(tiny_text_checkpoint, weights_only=True)["state_dict"]
    reloaded = module.state_dict()
    assert all(torch.equal(v, reloaded[k]) for k, v in state.items() if isinstance(v, torch.Tensor))
