"""Target-aware text vectors (mmtab.embeddings.target_aware): adapters fitted on the target inside one
fit, the model trained on their reduced vectors; predict equals validate from the checkpoint, a resumed
run fits nothing again and ends bit-identical, and cross-fitted training rows never come from an
adapter that saw them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import mmtab.embeddings.target_aware as target_aware
from mmtab import FusionModel, MultimodalModule, TabularMLP, TextEmbeddings, TextEncoder
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.data.dataset import TensorTable
from mmtab.embeddings.target_aware import AdapterTarget, TargetAware, trained_state
from mmtab.errors import ConfigError
from mmtab.models.adapters import LoraAdapters
from mmtab.models.reduction import Pca, TextReduction
from mmtab.tasks import get_task

from .conftest import REVIEW_CAT, REVIEW_CONT, REVIEW_TEXT, quiet_trainer, text_decides_datamodule

LORA = LoraAdapters(rank=4, alpha=8, dropout=0.1, last_layers=1)


def tar_module(dm, *, crossfit: int = 2, cache_dir: str | None = None, lora=LORA, frozen: bool = True,
               text_into: str = "fusion", ensemble_size: int = 1, **target) -> MultimodalModule:
    torch.manual_seed(0)
    net = FusionModel(n_outputs=dm.n_outputs,
                      tabular=TabularMLP(**dm.tabular_dims, layers=[16], ensemble_size=ensemble_size),
                      text=TextEncoder(pretrained=dm.text_model, columns=dm.text_slots, lora=lora, reduce_to=4),
                      head_layers=[16], text_into=text_into)
    config = TargetAware(**{"max_epochs": 3, "lr": 3e-3, "crossfit": crossfit, **target})
    return MultimodalModule(net, task=dm.fitted_task, lr=3e-3, parts={"text": {"frozen": frozen}},
                            target_aware=config, text_embeddings=TextEmbeddings(cache_dir=cache_dir),
                            target_scaling=getattr(dm, "target_scaling", None))


@pytest.fixture(scope="module")
def tar_run(tiny_bert, reviews_sample, tmp_path_factory):
    """One TAR fit of 2 epochs with 2 cross-fitted folds, each adapter fit's rows recorded."""
    tmp = tmp_path_factory.mktemp("tar")
    dm = text_decides_datamodule(reviews_sample, tiny_bert)
    dm.setup("fit")
    seen: dict[str, set[int]] = {}
    real = target_aware._fit_one

    def recording(module, target, text, table, rows, labels, seed, name, *rest):
        seen[name] = set(rows.tolist())  # every row the fit trained or stopped on
        return real(module, target, text, table, rows, labels, seed, name, *rest)

    target_aware._fit_one = recording
    try:
        module = tar_module(dm, cache_dir=str(tmp / "cache"))
        every_epoch = ModelCheckpoint(dirpath=tmp / "ckpt", save_top_k=-1, every_n_epochs=1)
        trainer = quiet_trainer(max_epochs=2, enable_checkpointing=True, callbacks=[every_epoch])
        trainer.fit(module, dm)
    finally:
        target_aware._fit_one = real
    return {"dm": dm, "module": module, "trainer": trainer, "seen": seen, "tmp": tmp,
            "checkpoints": sorted((tmp / "ckpt").glob("*.ckpt"))}


def test_the_adapters_learn_the_target_and_the_model_reads_their_reduced_vectors(tar_run):
    module, dm = tar_run["module"], tar_run["dm"]
    fits = module.adapter_fits
    assert [f["name"] for f in fits] == ["all training rows", "fold 0", "fold 1"]
    assert all(f["holdout_loss"] < 0.5 * f["prior_loss"] for f in fits)  # the text decides: far below the prior
    text = module.net.text
    assert text.reduction.is_fitted() and text.out_features == 4 * dm.text_slots
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in trained_state(text).items())  # B starts at 0


def test_the_model_on_target_aware_vectors_reads_the_target_from_the_text(tiny_bert, reviews_sample):
    dm = text_decides_datamodule(reviews_sample, tiny_bert)
    module = tar_module(dm, crossfit=0)
    trainer = quiet_trainer(max_epochs=2)
    trainer.fit(module, dm)
    assert trainer.callback_metrics["val_auroc"] > 0.95  # the table is noise here: the text carries it
    assert trainer.callback_metrics["val_tabular_auroc"] < 0.7


def test_cross_fitted_training_rows_never_come_from_an_adapter_that_saw_them(tar_run):
    module, dm, seen = tar_run["module"], tar_run["dm"], tar_run["seen"]
    crossfit = module.crossfit
    fold = crossfit.fold.numpy()
    assert set(np.unique(fold)) == {0, 1}
    for j in (0, 1):
        assert not seen[f"fold {j}"] & set(np.flatnonzero(fold == j).tolist())  # fold j's adapter never saw them
    assert seen["all training rows"] == set(range(len(fold)))
    # and the vectors the model trained on are those adapters': each row's from its own fold's adapter
    table = dm.table("train")
    text = module.net.text
    ids, mask = table.tensors["input_ids"], table.tensors["attention_mask"]

    def vectors(branch, rows):  # through the embedding pipeline, as the fit computed them (bf16 where native)
        flat = module.text_embeddings.embed(branch, ids[rows].flatten(0, 1), mask[rows].flatten(0, 1))
        return flat.view(len(rows), -1)

    for j, state in enumerate(crossfit.states):
        twin = text.unreduced()
        twin.load_state_dict(state, strict=False)
        rows = torch.from_numpy(np.flatnonzero(fold == j)[:20])
        own = vectors(twin, rows)
        torch.testing.assert_close(table.tensors["text_embedding"][rows], own)
        assert not torch.allclose(own, vectors(text, rows), atol=1e-3)  # not the adapter fitted on all rows


def test_predict_equals_validate_from_the_checkpoint_in_a_fresh_module(tar_run):
    """The checkpoint holds the adapters and the reduction (not the base weights): a module built afresh,
    its vectors computed again without a cache, validates and predicts exactly as the fitted one."""
    dm, module = tar_run["dm"], tar_run["module"]
    last = tar_run["checkpoints"][-1]
    saved = torch.load(last, weights_only=True)
    assert not any(k.startswith("net.text.encoder.") and "lora_" not in k for k in saved["state_dict"])
    assert "net.text.reduction.components" in saved["state_dict"] and "mmtab_crossfit" in saved
    fresh = tar_module(dm, cache_dir=None)
    trainer = quiet_trainer()
    (theirs,) = trainer.validate(fresh, dm, ckpt_path=str(last), verbose=False)
    (ours,) = quiet_trainer().validate(module, dm, verbose=False)
    assert theirs["val_loss"] == pytest.approx(ours["val_loss"], abs=1e-5)
    # the fresh module computes its vectors again, perhaps with another thread count than the fit (a test
    # before it on this worker may set one): ~1e-6 apart, which can reorder near-tied scores of this
    # random encoder (AUROC about 0.46 here)
    assert theirs["val_auroc"] == pytest.approx(ours["val_auroc"], abs=1e-4)
    batches = trainer.predict(fresh, dm)
    losses = torch.cat([b["loss"] for b in batches])
    assert float(losses.mean()) == pytest.approx(theirs["val_loss"], abs=1e-5)


def test_a_resumed_tar_run_fits_no_adapter_again_and_ends_bit_identical(tar_run, monkeypatch):
    dm, module = tar_run["dm"], tar_run["module"]
    first = tar_run["checkpoints"][0]  # after epoch 0

    def no_refit(*args, **kwargs):
        raise AssertionError("a resumed run fitted the adapters again")

    monkeypatch.setattr("mmtab.training.module.fit_target_aware", no_refit)
    resumed = tar_module(dm, cache_dir=str(tar_run["tmp"] / "cache"))
    quiet_trainer(max_epochs=2).fit(resumed, dm, ckpt_path=str(first))
    ours, theirs = module.state_dict(), resumed.state_dict()
    different = [k for k, v in ours.items() if torch.is_tensor(v) and not torch.equal(v, theirs[k])]
    assert not different, different
    assert resumed.adapter_fits == module.adapter_fits


def test_adapters_fitted_on_a_sample_still_give_every_training_row_a_fold_and_a_vector(tiny_bert, reviews_sample):
    dm = text_decides_datamodule(reviews_sample.head(600), tiny_bert)
    module = tar_module(dm, max_rows=200, max_epochs=1)
    quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1).fit(module, dm)
    train = dm.table("train")
    sample, *folds = [f["rows"] + f["holdout_rows"] for f in module.adapter_fits]
    assert abs(sample - 200) <= 2 and sum(folds) == sample  # each fold's adapter: the sample less that fold
    assert len(module.crossfit.fold) == len(train) and set(module.crossfit.fold.tolist()) == {0, 1}
    assert torch.isfinite(train.tensors["text_embedding"]).all()


def test_reduction_is_pca_of_the_normalised_training_vectors():
    torch.manual_seed(0)
    x = torch.randn(50, 2 * 6)
    reduction = TextReduction(slots=2, width=6, dim=3)
    with pytest.raises(RuntimeError, match="not been fitted"):
        reduction(x)
    reduction.fit(x)
    out = reduction(x[:5]).view(5, 2, 3)
    for s in range(2):
        normalised = torch.nn.functional.normalize(x[:, s * 6:(s + 1) * 6], dim=-1)
        pca = Pca.fit(normalised, 3)
        torch.testing.assert_close(out[:, s], pca.transform(normalised[:5]), atol=1e-5, rtol=1e-5)
    fresh = TextReduction(slots=2, width=6, dim=3)
    fresh.load_state_dict(reduction.state_dict())  # what a checkpoint restores: the same projection
    torch.testing.assert_close(fresh(x[:5]), reduction(x[:5]))


def test_bad_target_aware_settings_are_one_message(tiny_bert, reviews_sample):
    dm = text_decides_datamodule(reviews_sample.head(200), tiny_bert)
    with pytest.raises(ConfigError, match="has no adapters to fit"):
        tar_module(dm, lora=None)
    with pytest.raises(ConfigError, match="crossfit: the text branch trains on"):
        tar_module(dm, frozen=False)
    with pytest.raises(ConfigError, match="crossfit is 1"):
        tar_module(dm, crossfit=1)
    with pytest.raises(ConfigError, match="holdout is 1.5"):
        tar_module(dm, holdout=1.5)
    with pytest.raises(ConfigError, match="regression is 'bins'"):
        tar_module(dm, regression="bins")
    with pytest.raises(ConfigError, match="bins is 1"):
        tar_module(dm, bins=1)


def test_a_numeric_target_binned_teaches_the_adapters_where_a_row_stands(tiny_bert, reviews_sample):
    """regression: binned fits the adapters on the target's quantile bins as ordered classes (the text
    decides the value here), then the model regresses the value itself on the adapted vectors."""
    frame = reviews_sample.copy()
    rng = np.random.default_rng(0)
    high = rng.integers(0, 2, len(frame)).astype(bool)
    frame["Review Text"] = np.where(high, "love it perfect", "returned it poor fabric")
    frame["Rating"] = np.where(high, 4.0, 1.5) + rng.normal(0, 0.3, len(frame))
    dm = TabularTextDataModule.from_frame(frame, target="Rating", task="regression", categorical_cols=REVIEW_CAT,
                                          continuous_cols=REVIEW_CONT, text_cols=REVIEW_TEXT, text_model=tiny_bert,
                                          batch_size=64, seed=0, max_length=32)
    dm.setup("fit")
    module = tar_module(dm, crossfit=0, regression="binned", bins=4)
    trainer = quiet_trainer(max_epochs=3)
    trainer.fit(module, dm)
    (fit,) = module.adapter_fits
    # the ordinal loss over 4 bins: the text tells which half a row is in (ln 2 = 0.69 nats of the bins'
    # 1.39), not which bin within it (the noise decides that)
    assert fit["holdout_loss"] < fit["prior_loss"] - 0.45
    assert trainer.callback_metrics["val_r2"] > 0.8  # the model regresses the value on the adapted vectors


def test_bins_are_cut_at_the_training_quantiles_and_merge_where_values_repeat(tiny_bert, reviews_sample):
    dm = text_decides_datamodule(reviews_sample.head(200), tiny_bert)
    module = tar_module(dm, crossfit=0, regression="binned", bins=8)
    module.task = get_task("regression")  # a numeric target with three values, as a 1-3 rating read as a number
    values = torch.tensor([1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0])
    target = AdapterTarget.of(module, TensorTable({"target": values}))
    assert target.task.name == "ordinal" and target.n_outputs == 2  # three bins: 8 asked for, the values allow 3
    assert target.table.tensors["target"].tolist() == [0, 1, 1, 2, 2, 2, 2, 2]
    with pytest.raises(ConfigError, match="has one value"):
        AdapterTarget.of(module, TensorTable({"target": torch.full((8,), 3.0)}))


def test_target_aware_vectors_as_the_tabular_ensembles_inputs_predict_as_they_validate(tiny_bert, reviews_sample,
                                                                                       tmp_path):
    """text_into: tabular (MulTaBench's way: the reduced vectors are the tabular learner's inputs), with a
    TabM-style ensemble: the model reads the target from the text, and a module built afresh from the
    checkpoint validates and predicts exactly as the fitted one."""
    dm = text_decides_datamodule(reviews_sample, tiny_bert)
    module = tar_module(dm, crossfit=0, text_into="tabular", ensemble_size=4, cache_dir=str(tmp_path / "cache"))
    assert module.net.tabular.n_extra == 4 * dm.text_slots and module.net.branch_heads is None
    trainer = quiet_trainer(max_epochs=2, enable_checkpointing=True,
                            callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    trainer.fit(module, dm)
    assert trainer.callback_metrics["val_auroc"] > 0.95  # the table is noise here: the text carries it
    fresh = tar_module(dm, crossfit=0, text_into="tabular", ensemble_size=4, cache_dir=None)
    (theirs,) = quiet_trainer().validate(fresh, dm, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), verbose=False)
    (ours,) = quiet_trainer().validate(module, dm, verbose=False)
    assert theirs["val_loss"] == pytest.approx(ours["val_loss"], abs=1e-5)
    losses = torch.cat([b["loss"] for b in quiet_trainer().predict(fresh, dm)])
    assert float(losses.mean()) == pytest.approx(theirs["val_loss"], abs=1e-5)
