"""LoRA adapters on the text branch (peft): only they train, checkpoints keep them without the base
weights, a run resumes bit for bit, and cached vectors are keyed by them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mmtab import FusionModel, MultimodalModule, TextEmbeddings, TextEncoder
from mmtab.errors import ConfigError
from mmtab.models.adapters import ADAPTER_MARK, LoraAdapters
from mmtab.training.checkpoints import load_checkpoint
from mmtab.training.param_groups import format_param_groups

from .conftest import ROOT, quiet_trainer, reviews_datamodule
from .test_cli import mmtab
from .test_resume import final_checkpoint, fit

LORA = LoraAdapters(rank=4, alpha=8, dropout=0.1, last_layers=1)


def text_module(dm, lora=LORA) -> MultimodalModule:
    torch.manual_seed(0)
    net = FusionModel(n_outputs=2, text=TextEncoder(pretrained=dm.text_model, columns=dm.text_slots, lora=lora),
                      head_layers=[16])
    return MultimodalModule(net, task=dm.fitted_task, lr=3e-3)


def test_only_the_adapters_of_the_encoder_train(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert, tabular=False)
    module = text_module(dm)
    encoder = module.net.text.encoder
    adapters = {n for n, p in encoder.named_parameters() if ADAPTER_MARK in n}
    assert adapters and all(".layer.1." in n for n in adapters)  # the last of the tiny BERT's 2 layers
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == adapters
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    quiet_trainer(max_steps=8, limit_val_batches=0).fit(module, dm)
    after = encoder.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= adapters
    assert any("lora_B" in k for k in changed)  # B starts at zero: it moved, so the adapters learned
    table = format_param_groups(module.build_optimizer())
    assert any(row.split()[0] == "text.adapters" for row in table.splitlines())  # a group of their own
    # unfreezing the branch after freezing it trains the adapters again, never the base weights
    module.net.freeze("text")
    module.net.unfreeze("text")
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == adapters


def test_bad_adapter_settings_are_one_message(tiny_bert):
    with pytest.raises(ConfigError, match="last_layers is 5; this encoder has 2 layers"):
        TextEncoder(pretrained=tiny_bert, lora=LoraAdapters(last_layers=5))
    with pytest.raises(ConfigError, match="text.lora.modules"):
        TextEncoder(pretrained=tiny_bert, lora=LoraAdapters(last_layers=1, modules=("no_such_layer",)))


def test_cached_vectors_are_keyed_by_the_adapters(tiny_bert, reviews_sample, tmp_path):
    """A frozen adapted encoder's vectors come from the cache only while its adapters are the same."""
    dm = reviews_datamodule(reviews_sample.head(200), tiny_bert, tabular=False)
    dm.setup("fit")
    module = text_module(dm)
    module.net.freeze("text")
    embeddings = TextEmbeddings(cache_dir=str(tmp_path))

    def vectors() -> torch.Tensor:
        table = dm.table("valid")
        embeddings.attach(module.net, table)
        return table.tensors["text_embedding"].clone()

    first = vectors()
    assert torch.equal(first, vectors())  # the same adapters: the cache's vectors, the same
    with torch.no_grad():
        for name, p in module.net.text.encoder.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    changed = vectors()
    assert not torch.allclose(first, changed)  # new adapters, new vectors: never the stale ones


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_bert, reviews_sample):
    tmp = tmp_path_factory.mktemp("lora")
    data = tmp / "reviews.parquet"
    reviews_sample.to_parquet(data)
    common = ["--config=configs/reviews_demo.yaml", f"--data.path={data}", f"--data.text_model={tiny_bert}",
              "--data.max_length=32", "--model.parts.text.frozen=false", "--model.net.text.lora.last_layers=1",
              "--model.net.text.lora.rank=4", "--trainer.enable_progress_bar=false", "--trainer.max_epochs=3",
              f"--model.text_embeddings.cache_dir={tmp / 'cache'}"]
    return {"tmp": tmp, "common": common, "data": data}


def test_a_lora_run_keeps_only_what_trains_and_predicts_from_it(lora_run):
    tmp, common = lora_run["tmp"], lora_run["common"]
    proc = mmtab("fit", *common, f"--trainer.default_root_dir={tmp / 'one'}", "--trainer.max_epochs=1")
    assert "text.adapters" in proc.stdout + proc.stderr
    ckpt = final_checkpoint(tmp / "one")
    text_keys = [k for k in ckpt["state_dict"] if k.startswith("net.text.")]
    assert all(ADAPTER_MARK in k or not k.startswith("net.text.encoder.") for k in text_keys)
    assert any(ADAPTER_MARK in k for k in text_keys)
    assert ckpt["mmtab_model_config"]["init_args"]["net"]["init_args"]["text"]["init_args"]["pretrained"]
    (path,) = (tmp / "one").rglob("last.ckpt")
    module, pre = load_checkpoint(path)  # the base weights from the model's files, the adapters from the file
    from mmtab.predict import predict_frame

    rows = pd.read_parquet(lora_run["data"]).head(100)
    here = predict_frame(module, pre, rows)
    out = tmp / "p.csv"
    mmtab("predict", *common, f"--trainer.default_root_dir={tmp / 'one'}", f"--ckpt_path={path}",
          f"--data.predict_path={lora_run['data']}", f"--predictions.output={out}")
    np.testing.assert_allclose(pd.read_csv(out)["prob_1"].head(100).to_numpy(), here["prob_1"].to_numpy(), atol=1e-6)
    # mmtab embed with the checkpoint: the adapted encoder's vectors, not the pretrained one's
    vectors = {}
    for name, ckpt in (("adapted", [f"--ckpt_path={path}"]), ("pretrained", [])):
        file = tmp / f"{name}.parquet"
        mmtab("embed", *common, f"--trainer.default_root_dir={tmp / 'one'}", *ckpt, f"--embed.output={file}",
              "--embed.dim=4")
        vectors[name] = pd.read_parquet(file).filter(like="_pc").to_numpy()
    assert vectors["adapted"].shape == vectors["pretrained"].shape
    assert not np.allclose(vectors["adapted"], vectors["pretrained"], atol=1e-3)


def test_a_lora_run_killed_mid_epoch_resumes_bit_identical(lora_run):
    tmp, common = lora_run["tmp"], lora_run["common"]
    whole = fit(*common, f"--trainer.default_root_dir={tmp / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killer = json.dumps({"class_path": "tests.killer.SigkillMidEpoch", "init_args": {"epoch": 1, "batch": 3}})
    killed = fit(*common, f"--trainer.default_root_dir={tmp / 'killed'}", f"--trainer.callbacks+={killer}")
    assert killed.returncode == -9
    (last,) = (tmp / "killed").rglob("last.ckpt")
    resumed = fit(*common, f"--trainer.default_root_dir={tmp / 'killed'}", f"--ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = final_checkpoint(tmp / "whole"), final_checkpoint(tmp / "killed")
    assert a["global_step"] == b["global_step"] and set(a["state_dict"]) == set(b["state_dict"])
    different = [k for k, v in a["state_dict"].items() if torch.is_tensor(v) and not torch.equal(v, b["state_dict"][k])]
    assert not different, different
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_shipped_configs_take_adapters(monkeypatch):
    monkeypatch.chdir(ROOT)
    from .test_docs import print_config

    printed = print_config(["fit", "--config", "configs/reviews_text.yaml", "--model.net.text.lora.rank=16"])
    assert "rank: 16" in printed
