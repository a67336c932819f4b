"""Text that pays for itself or steps aside (mmtab.embeddings.text_choice): one fit chooses, on rows held
out from the training rows, between the table alone, frozen text and target-aware text; the choice
goes into the checkpoint, and a model whose text stepped aside predicts without its text branch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mmtab import FusionModel, MultimodalModule, TabularMLP, TabularTextDataModule, TextEmbeddings, TextEncoder
from mmtab.embeddings.export import export_embeddings
from mmtab.embeddings.target_aware import TargetAware
from mmtab.embeddings.text_choice import CHOICE_KEY, TextChoice
from mmtab.errors import ConfigError
from mmtab.models.adapters import LoraAdapters

from .conftest import REVIEW_CAT, REVIEW_CONT, REVIEW_TEXT, quiet_trainer, text_decides_datamodule

LORA = LoraAdapters(rank=4, alpha=8, dropout=0.1, last_layers=1)


def choice_module(dm, *, target_aware: bool = True, frozen: bool = True, crossfit: int = 0,
                  **choice) -> MultimodalModule:
    torch.manual_seed(0)
    net = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=[16]),
                      text=TextEncoder(pretrained=dm.text_model, columns=dm.text_slots, lora=LORA, reduce_to=4))
    tar = TargetAware(max_epochs=3, lr=3e-3, crossfit=crossfit) if target_aware else None
    return MultimodalModule(net, task=dm.fitted_task, lr=3e-3, scheduler=None, parts={"text": {"frozen": frozen}},
                            target_aware=tar, text_choice=TextChoice(**{"max_epochs": 8, "patience": 3, **choice}),
                            text_embeddings=TextEmbeddings(cache_dir=None))


def table_decides_datamodule(frame: pd.DataFrame, text_model: str) -> TabularTextDataModule:
    """The reviews with a random target that one table column follows on 85% of rows, and each review's
    text moved to another row: the table decides, the text is noise."""
    rng = np.random.default_rng(0)
    frame = frame.copy()
    target = rng.integers(0, 2, len(frame))
    follows = rng.random(len(frame)) < 0.85
    frame["Recommended IND"] = target
    frame["Department Name"] = np.where(follows == (target == 1), "Tops", "Dresses")
    frame[REVIEW_TEXT] = frame[REVIEW_TEXT].sample(frac=1, random_state=1).to_numpy()
    return TabularTextDataModule.from_frame(frame, target="Recommended IND", categorical_cols=REVIEW_CAT,
                                            continuous_cols=REVIEW_CONT, text_cols=REVIEW_TEXT, text_model=text_model,
                                            batch_size=64, seed=0, max_length=32)


@pytest.fixture(scope="module")
def text_run(tiny_bert, reviews_sample, tmp_path_factory):
    """The text decides: a fit that chooses, its checkpoints kept after each epoch."""
    tmp = tmp_path_factory.mktemp("choice")
    dm = text_decides_datamodule(reviews_sample, tiny_bert)
    module = choice_module(dm)
    every_epoch = ModelCheckpoint(dirpath=tmp / "ckpt", save_top_k=-1, every_n_epochs=1)
    trainer = quiet_trainer(max_epochs=2, enable_checkpointing=True, callbacks=[every_epoch])
    trainer.fit(module, dm)
    return {"dm": dm, "module": module, "checkpoints": sorted((tmp / "ckpt").glob("*.ckpt"))}


def test_where_the_text_decides_a_text_candidate_is_chosen_far_below_the_table(text_run):
    report = text_run["module"].text_choice_report
    heads = report["heads"]
    assert list(heads) == ["table", "frozen", "target_aware"]
    assert report["choice"] in ("frozen", "target_aware")
    chosen = heads[report["choice"]]
    assert chosen["loss"] == min(h["loss"] for h in heads.values())
    # the table is noise here: the text pays by far more than noise, and the scores are on unseen rows
    assert chosen["loss_vs_table"] < -10 * chosen["loss_vs_table_se"]
    assert heads["table"]["auroc"] < 0.7 < 0.95 < chosen["auroc"]
    n_train = len(text_run["dm"].table("train"))
    assert report["fit_rows"] + report["holdout_rows"] == n_train
    # the target-aware adapters never saw the rows the choice was made on: they fitted on the others
    (fit,) = text_run["module"].adapter_fits
    assert fit["rows"] + fit["holdout_rows"] == report["fit_rows"]


def test_the_choice_is_in_the_checkpoint_and_a_fresh_module_validates_as_the_fitted_one(text_run):
    dm, module = text_run["dm"], text_run["module"]
    last = text_run["checkpoints"][-1]
    saved = torch.load(last, weights_only=True)
    assert saved[CHOICE_KEY]["choice"] == module.text_choice_report["choice"]
    fresh = choice_module(dm)
    (theirs,) = quiet_trainer().validate(fresh, dm, ckpt_path=str(last), verbose=False)
    (ours,) = quiet_trainer().validate(module, dm, verbose=False)
    assert theirs["val_loss"] == pytest.approx(ours["val_loss"], abs=1e-5)
    assert fresh.text_choice_report == module.text_choice_report


def test_a_resumed_run_chooses_nothing_again(text_run, monkeypatch):
    dm, module = text_run["dm"], text_run["module"]

    def no_choice(*args, **kwargs):
        raise AssertionError("a resumed run chose again")

    monkeypatch.setattr("mmtab.training.module.choose_text", no_choice)
    monkeypatch.setattr("mmtab.training.module.fit_target_aware", no_choice)
    resumed = choice_module(dm)
    quiet_trainer(max_epochs=2).fit(resumed, dm, ckpt_path=str(text_run["checkpoints"][0]))
    ours, theirs = module.state_dict(), resumed.state_dict()
    different = [k for k, v in ours.items() if torch.is_tensor(v) and not torch.equal(v, theirs[k])]
    assert not different, different


def test_where_the_table_decides_the_text_steps_aside_and_predict_never_needs_it(tiny_bert, reviews_sample, tmp_path):
    dm = table_decides_datamodule(reviews_sample, tiny_bert)
    module = choice_module(dm, target_aware=False)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = quiet_trainer(max_epochs=3, enable_checkpointing=True, callbacks=[checkpoints])
    trainer.fit(module, dm)
    report = module.text_choice_report
    assert list(report["heads"]) == ["table", "frozen"] and report["choice"] == "table"
    assert module.net.text is None and module.net.branch_heads is None  # the model is the table alone
    assert trainer.callback_metrics["val_auroc"] > 0.8
    # every weight the optimizer steps is the model's: none of the head built before the choice
    optimizer_params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimizer_params == {id(p) for p in module.net.parameters() if p.requires_grad}
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert not any(k.startswith("net.text.") for k in saved["state_dict"])
    fresh = choice_module(dm, target_aware=False)  # built from the config, with a text branch
    (theirs,) = quiet_trainer().validate(fresh, dm, ckpt_path=str(tmp_path / "last.ckpt"), verbose=False)
    assert fresh.net.text is None
    (ours,) = quiet_trainer().validate(module, dm, verbose=False)
    assert theirs["val_loss"] == pytest.approx(ours["val_loss"], abs=1e-6)
    with pytest.raises(ConfigError, match="text stepped aside"):  # no vectors to export: one message
        export_embeddings(fresh, dm, tmp_path / "vectors.parquet")


def test_bad_text_choice_settings_are_one_message(tiny_bert, reviews_sample):
    dm = text_decides_datamodule(reviews_sample.head(200), tiny_bert)
    with pytest.raises(ConfigError, match="set model.parts.text.frozen: true"):
        choice_module(dm, frozen=False)
    with pytest.raises(ConfigError, match="does not cross-fit"):
        choice_module(dm, crossfit=2)
    with pytest.raises(ConfigError, match="holdout is 0"):
        choice_module(dm, holdout=0.0)
    text_only = FusionModel(n_outputs=dm.n_outputs, text=TextEncoder(pretrained=dm.text_model, columns=dm.text_slots))
    with pytest.raises(ConfigError, match="needs both a tabular branch and a text branch"):
        MultimodalModule(text_only, task=dm.fitted_task, parts={"text": {"frozen": True}}, text_choice=TextChoice())
