import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch

from mmtab import ConfigError, DataValidationError, TabularTextDataModule
from mmtab.data.dataset import BatchLoader, TensorTable
from mmtab.data.preprocessing import UNKNOWN

from .conftest import adult_datamodule, quiet_trainer, reviews_datamodule, tabular_module


def test_stratified_split_is_disjoint_seeded_and_keeps_the_class_ratio(adult_sample):
    dm = adult_datamodule(adult_sample, valid_pct=0.25)
    train, valid = dm.frames["train"], dm.frames["valid"]
    assert len(train) + len(valid) == len(adult_sample) and not set(train.index) & set(valid.index)
    share = (adult_sample["income"] == ">50K").mean()
    assert (valid["income"] == ">50K").mean() == pytest.approx(share, abs=0.002)
    assert adult_datamodule(adult_sample, valid_pct=0.25).frames["valid"].index.equals(valid.index)
    assert not adult_datamodule(adult_sample, valid_pct=0.25, seed=1).frames["valid"].index.equals(valid.index)


def test_preprocessing_is_fitted_on_training_rows_only(adult_sample):
    frame = adult_sample.copy()
    dm = adult_datamodule(frame, min_category_count=1)
    valid_rows = dm.frames["valid"].index[:20]
    frame.loc[valid_rows, "occupation"] = "Only-in-validation"
    frame.loc[valid_rows, "age"] = 10_000
    dm = adult_datamodule(frame, min_category_count=1)
    assert "Only-in-validation" not in dm.preprocessor.vocabs["occupation"].levels
    assert dm.preprocessor.scalings[0].params[0] == pytest.approx(dm.frames["train"]["age"].mean())
    codes = dm.table("valid").tensors["cat"][:, 3]
    assert (codes[dm.frames["valid"].index.isin(valid_rows)] == UNKNOWN).all()


def test_split_column_valid_file_and_test_file(tmp_path, adult_sample):
    split = np.where(np.arange(len(adult_sample)) % 5 == 0, "valid", "train")
    split[:7] = "test"
    dm = adult_datamodule(adult_sample.assign(part=split), split_col="part")
    assert [len(dm.frames[k]) for k in ("train", "valid", "test")] == [(split == k).sum() for k in
                                                                       ("train", "valid", "test")]
    valid_file = tmp_path / "valid.csv"
    adult_sample.iloc[:100].to_csv(valid_file, index=False)
    dm = adult_datamodule(adult_sample.iloc[100:], valid_path=str(valid_file), test_path=str(valid_file))
    assert len(dm.frames["valid"]) == len(dm.frames["test"]) == 100


def test_bad_data_is_reported_before_any_training_step(adult_sample):
    frame = adult_sample.copy()
    frame["age"] = frame["age"].astype(object)
    frame.loc[[3, 8], "age"] = "unknown"
    dm = adult_datamodule(frame)
    with pytest.raises(DataValidationError, match=r"'age' in continuous_cols has non-numeric values \(row 3"):
        quiet_trainer(max_steps=1).fit(tabular_module(adult_datamodule(adult_sample)), dm)


def test_an_empty_split_is_an_error(adult_sample):
    with pytest.raises(DataValidationError, match="the valid split has no rows"):
        adult_datamodule(adult_sample.assign(part="train"), split_col="part").setup("fit")


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TabularTextDataModule(path=str(tmp_path / "nope.csv"), target="y", continuous_cols=["x"]).setup("fit")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(ConfigError, match="use .csv, .tsv or .parquet"):
        TabularTextDataModule(path=str(tmp_path / "t.xlsx"), target="y", continuous_cols=["x"]).setup("fit")


def test_batches_cover_every_row_once_per_epoch_in_a_new_order():
    table = TensorTable({"x": torch.arange(100), "y": torch.arange(100) * 2})
    loader = BatchLoader(table, batch_size=32, shuffle=True, seed=0)
    epochs = [torch.cat([b["x"] for b in loader]) for _ in range(2)]
    assert len(loader) == 4 and all(torch.equal(e.sort().values, torch.arange(100)) for e in epochs)
    assert sorted(len(b["x"]) for b in loader) == [25, 25, 25, 25]  # every row, in batches of equal size
    assert not torch.equal(epochs[0], epochs[1])
    batch = next(iter(loader))
    assert torch.equal(batch["y"], batch["x"] * 2)  # columns stay aligned
    ordered = BatchLoader(table, batch_size=32)
    assert len(ordered) == 4 and torch.equal(torch.cat([b["x"] for b in ordered]), torch.arange(100))


def test_state_dict_restores_the_fitted_preprocessor(adult_sample):
    dm = adult_datamodule(adult_sample)
    other = adult_datamodule(adult_sample.iloc[::-1].reset_index(drop=True).assign(age=lambda d: d["age"] * 2))
    other.load_state_dict(dm.state_dict())
    assert other.preprocessor.scalings == dm.preprocessor.scalings
    frame = pd.DataFrame(adult_sample.iloc[:5])
    assert torch.equal(other.preprocessor.transform(frame)["cont"], dm.preprocessor.transform(frame)["cont"])


@pytest.mark.parametrize("options", [{"valid_pct": 0.1, "split_col": "part"},
                                     {"split_col": "part", "valid_path": "v.csv"},
                                     {"valid_pct": 0.1, "split_col": "part", "valid_path": "v.csv"}])
def test_conflicting_split_options_are_an_error_that_names_them(options, adult_sample):
    with pytest.raises(ValueError, match="each choose the validation rows: keep one") as error:
        adult_datamodule(adult_sample, **options)
    assert all(f"data.{name}" in str(error.value) for name in options)


def test_a_python_text_branch_that_differs_from_the_data_s_text_model_stops_fit(tiny_bert, reviews_sample, tmp_path):
    from transformers import AutoTokenizer

    from mmtab import FusionModel, MultimodalModule, TextEncoder

    other = tmp_path / "other_model"
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(other)
    __import__("transformers").AutoModel.from_pretrained(tiny_bert).save_pretrained(other)
    dm = reviews_datamodule(reviews_sample, tiny_bert, tabular=False)
    net = FusionModel(n_outputs=dm.n_outputs, text=TextEncoder(pretrained=str(other)))
    with pytest.raises(ValueError, match="name one text model for both"):
        quiet_trainer(max_steps=1).fit(MultimodalModule(net, task=dm.fitted_task), dm)


class FirstRows(pl.Callback):
    def __init__(self):
        self.rows: list[list[int]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.rows.append(batch["row"][:8].tolist())


def test_each_epoch_is_shuffled_anew_and_its_order_depends_on_seed_and_epoch_alone(adult_sample):
    dm = adult_datamodule(adult_sample)
    first = FirstRows()
    quiet_trainer(max_epochs=3, limit_val_batches=0, callbacks=[first]).fit(tabular_module(dm), dm)
    assert len({tuple(r) for r in first.rows}) == 3  # a new order every epoch
    fresh = adult_datamodule(adult_sample).train_dataloader()  # e.g. a resumed process, at epoch 2
    fresh.epoch = lambda: 2
    assert next(iter(fresh))["row"][:8].tolist() == first.rows[2]


def test_useless_columns_are_warned_about_not_refused(adult_sample, caplog):
    frame = adult_sample.assign(race="White", age=40)
    with caplog.at_level("WARNING", logger="mmtab"):
        adult_datamodule(frame).setup("fit")
    said = caplog.text
    assert "categorical column 'race' has one value in every training row ('White')" in said
    assert "continuous column 'age' is constant in the training rows" in said


def test_an_empty_text_column_is_warned_about(tiny_bert, reviews_sample, caplog):
    with caplog.at_level("WARNING", logger="mmtab"):
        reviews_datamodule(reviews_sample.assign(Title=""), tiny_bert).setup("fit")
    assert "text column 'Title' is empty in every training row" in caplog.text


def test_a_target_mixing_numbers_and_text_is_named(adult_sample):
    frame = adult_sample.assign(income=adult_sample["income"].astype(object))
    frame.loc[frame.index[:50], "income"] = 1
    with pytest.raises(DataValidationError, match="target 'income' mixes kinds of values \\(int, str\\)"):
        adult_datamodule(frame).setup("fit")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_only_the_columns_the_config_names_are_read(adult_sample, tmp_path, suffix):
    wide = adult_sample.assign(**{f"unused_{i}": np.arange(len(adult_sample)) for i in range(20)})
    path = tmp_path / f"wide{suffix}"
    wide.to_csv(path, index=False) if suffix == ".csv" else wide.to_parquet(path)
    dm = TabularTextDataModule(path=str(path), target="income", categorical_cols=["education"],
                               continuous_cols=["age"], weight_col=None)
    assert set(dm.frames["train"].columns) == {"education", "age", "income"}


def test_a_plain_python_loop_gets_a_new_order_each_epoch(adult_sample):
    """Without a trainer (a user's own loop) each pass over the training loader is a new epoch."""
    loader = adult_datamodule(adult_sample).train_dataloader()
    first, second = ([b["row"][:8].tolist() for b in loader][0] for _ in range(2))
    assert first != second


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_batches_come_from_pinned_memory_and_the_fit_learns(adult_sample):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm)
    trainer = quiet_trainer(accelerator="gpu", max_epochs=2)
    trainer.fit(module, dm)
    assert all(t.is_pinned() for t in next(iter(dm.train_dataloader())).values())
    assert all(t.is_pinned() for t in next(iter(dm.val_dataloader())).values())
    assert float(trainer.callback_metrics["val_auroc"]) > 0.8
