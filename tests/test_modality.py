"""The modality report: each branch alone beside the fusion, on every fit with two branches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from mmtab import ConcatFusion, FusionModel, MultimodalModule, TabularMLP, TabularTextDataModule, TextEncoder
from mmtab.explanations.modality import REPORT_KEY, best_head, format_report, verdict
from mmtab.predict import predict_frame

from .conftest import quiet_trainer, reviews_datamodule, text_decides_datamodule


def fused(dm: TabularTextDataModule, *, branch_heads: bool = True, weight: float = 0.0, frozen: bool = True,
          seed: int = 0) -> MultimodalModule:
    torch.manual_seed(seed)
    net = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=[16], dropout=0.1),
                      text=TextEncoder(pretrained=dm.text_model, columns=dm.text_slots), fusion=ConcatFusion,
                      head_layers=[16], head_dropout=0.1, branch_heads=branch_heads, branch_loss_weight=weight)
    return MultimodalModule(net, task=dm.fitted_task, lr=3e-3, parts={"text": {"frozen": frozen}})


def test_watching_heads_leave_the_fused_model_bit_identical(tiny_bert, reviews_sample):
    """Weight 0: the heads learn from the branches and change nothing else, dropout included."""
    states = {}
    for heads in (False, True):
        dm = reviews_datamodule(reviews_sample, tiny_bert)
        module = fused(dm, branch_heads=heads, frozen=False)
        quiet_trainer(max_steps=6, limit_val_batches=0).fit(module, dm)
        states[heads] = {k: v for k, v in module.net.state_dict().items() if not k.startswith("head.branches.")}
    assert states[True].keys() == states[False].keys()
    differ = [k for k, v in states[True].items() if torch.is_tensor(v) and not torch.equal(v, states[False][k])]
    assert not differ, differ


def test_an_auxiliary_weight_trains_the_branches_on_the_heads_loss(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fused(dm, weight=1.0, frozen=False)
    batch = next(b for b in dm.train_dataloader() if b["has_text"].all())  # no row on the no-text vector
    outputs = module.net.outputs(batch)
    module.task.loss(outputs["text"], batch["target"]).mean().backward()  # the text head's loss alone
    assert module.net.text.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None or not p.grad.any() for p in module.net.tabular.parameters())  # not the table's
    module.zero_grad()
    watching = fused(dm, weight=0.0, frozen=False)
    module.task.loss(watching.net.outputs(batch)["text"], batch["target"]).mean().backward()
    assert watching.net.text.encoder.embeddings.word_embeddings.weight.grad is None  # weight 0: nothing reaches it
    heads = watching.net.branch_heads
    text_rows = slice(heads.names.index("text") * 2, heads.names.index("text") * 2 + 2)
    assert heads.weight.grad[text_rows].abs().sum() > 0  # the head itself learns
    assert not (heads.weight.grad * (1 - heads.mask)).any()  # and reads nothing but its own branch


def test_one_branch_has_no_branch_heads(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert, text=False)
    net = FusionModel(n_outputs=2, tabular=TabularMLP(**dm.tabular_dims, layers=[8]))
    assert net.branch_heads is None and set(net.outputs(next(iter(dm.val_dataloader())))) == {"fusion"}
    with pytest.raises(ValueError, match="branch_loss_weight"):
        FusionModel(n_outputs=2, tabular=TabularMLP(**dm.tabular_dims, layers=[8]), branch_loss_weight=2)


@pytest.fixture(scope="module")
def text_decides(tmp_path_factory, tiny_bert, reviews_sample):
    """A fit where the text decides the target and the table is noise: the text alone should be
    level with the fusion and the table alone near chance."""
    dm = text_decides_datamodule(reviews_sample, tiny_bert)
    module = fused(dm)
    from lightning.pytorch.callbacks import ModelCheckpoint

    folder = tmp_path_factory.mktemp("modality")
    checkpoint = ModelCheckpoint(dirpath=folder, monitor="val_loss", save_last=True)
    trainer = quiet_trainer(max_epochs=6, enable_checkpointing=True, callbacks=[checkpoint])
    trainer.fit(module, dm)
    return {"module": module, "dm": dm, "frame": dm.split_frame("valid"), "best": checkpoint.best_model_path,
            "trainer": trainer}


def test_the_report_measures_each_branch_and_travels_in_the_checkpoint(text_decides):
    report = torch.load(text_decides["best"], weights_only=True)[REPORT_KEY]
    heads = report["heads"]
    assert report["main_metric"] == "auroc" and set(heads) == {"fusion", "tabular", "text"}
    assert heads["text"]["auroc"] > 0.95 and heads["fusion"]["auroc"] > 0.95
    assert heads["tabular"]["auroc"] < 0.65  # the table is shuffled: near chance
    tabular = heads["tabular"]
    assert tabular["loss_vs_fusion"] > 5 * tabular["loss_vs_fusion_se"]  # worse by far more than noise
    # the branches' metrics are logged like every metric
    logged = text_decides["trainer"].callback_metrics
    assert {"val_text_auroc", "val_tabular_auroc", "val_text_loss"} <= set(logged)
    table = format_report(report)
    assert table.splitlines()[0].split()[:3] == ["head", "auroc", "loss"] and "text alone" in table
    module = restored(text_decides, torch.load(text_decides["best"], weights_only=True))
    assert module.modality_report == report


def restored(case: dict, checkpoint: dict) -> MultimodalModule:
    """A new module of the case's config with `checkpoint` read into it, as a trainer's restore does."""
    module = fused(case["dm"])
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def test_predict_with_a_branch_head(text_decides):
    module = restored(text_decides, torch.load(text_decides["best"], weights_only=True))
    pre = text_decides["dm"].preprocessor
    rows = text_decides["frame"].head(200)
    fusion = predict_frame(module, pre, rows)
    text = predict_frame(module, pre, rows, head="text")
    table = predict_frame(module, pre, rows, head="tabular")
    assert not np.allclose(text["prob_1"], table["prob_1"])
    assert (text["prediction"] == rows["Recommended IND"]).mean() > 0.95
    assert module.prediction_head == "fusion"  # predict_frame leaves the module as it found it
    assert predict_frame(module, pre, rows, head="best")["prob_1"].equals(fusion["prob_1"])  # nothing beat fusion
    with pytest.raises(ValueError, match="heads are"):
        predict_frame(module, pre, rows, head="image")


def test_a_checkpoint_from_before_the_branch_heads_still_loads(text_decides):
    ckpt = torch.load(text_decides["best"], weights_only=True)
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if ".head.branches." not in k}
    del ckpt[REPORT_KEY]
    module = restored(text_decides, ckpt)
    assert module.net.branch_heads is None and module.modality is None
    new = restored(text_decides, torch.load(text_decides["best"], weights_only=True))
    pre = text_decides["dm"].preprocessor
    rows = text_decides["frame"].head(50)
    np.testing.assert_array_equal(predict_frame(module, pre, rows)["prob_1"], predict_frame(new, pre, rows)["prob_1"])


def report(fusion_loss: float, branch_loss: float, se: float) -> dict:
    row = {"loss": branch_loss, "auroc": 0.9, "loss_vs_fusion": branch_loss - fusion_loss, "loss_vs_fusion_se": se}
    return {"stage": "val", "epoch": 0, "main_metric": "auroc",
            "heads": {"fusion": {"loss": fusion_loss, "auroc": 0.9}, "tabular": row,
                      "text": {**row, "loss": 0.9, "loss_vs_fusion": 0.5}}}


def test_a_branch_is_chosen_only_when_it_beats_the_fusion_by_more_than_noise():
    assert best_head(report(0.30, 0.29, 0.01)) == "fusion" and verdict(report(0.30, 0.29, 0.01)) == ""
    beaten = report(0.30, 0.25, 0.01)
    assert best_head(beaten) == "tabular"
    line = verdict(beaten)
    assert "tabular branch alone beats the fused model" in line and "--predictions.head tabular" in line
    assert "5.0 standard errors" in line
    assert best_head(None) == "fusion"
    assert math.isclose(beaten["heads"]["tabular"]["loss_vs_fusion"], -0.05)


def test_fit_prints_the_report_and_predict_takes_a_head(tmp_path, tiny_bert, reviews_sample):
    """Through the CLI: the table at the end of fit, and --predictions.head."""
    from .test_cli import mmtab

    data = tmp_path / "reviews.parquet"
    reviews_sample.to_parquet(data)
    common = ["--config=configs/reviews_demo.yaml", f"--data.path={data}", f"--data.text_model={tiny_bert}",
              f"--trainer.default_root_dir={tmp_path / 'runs'}", f"--model.text_embeddings.cache_dir={tmp_path / 'c'}",
              "--data.max_length=32"]
    fit = mmtab("fit", *common, "--trainer.max_epochs=2")
    out = fit.stdout + fit.stderr
    assert "modality report (validation rows, the best checkpoint's" in out
    assert "tabular alone" in out and "text alone" in out
    for head in ("text", "best"):
        path = tmp_path / f"{head}.csv"
        proc = mmtab("predict", *common, "--ckpt_path=best", f"--predictions.output={path}",
                     f"--predictions.head={head}")
        assert len(pd.read_csv(path)) > 0
    assert "predicting with the text head" in proc.stdout or "predicting with the" in proc.stdout
    bad = mmtab("predict", *common, "--ckpt_path=best", f"--predictions.output={tmp_path / 'x.csv'}",
                "--predictions.head=image", check=False)
    assert bad.returncode == 2 and "head" in bad.stderr and "Traceback" not in bad.stderr
