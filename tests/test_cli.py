"""`mmtab fit / validate / predict` end to end on real rows, in fresh processes where it matters."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmtab.cli import MmtabCLI
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.predict import predict_frame
from mmtab.training.checkpoints import load_checkpoint
from mmtab.training.module import MultimodalModule

from .conftest import ROOT

CONFIG = str(ROOT / "configs" / "adult.yaml")


def mmtab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mmtab.cli", *args], capture_output=True, text=True, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"mmtab {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory, adult_sample) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "adult.parquet"
    adult_sample.assign(row_id=np.arange(len(adult_sample)) * 7).to_parquet(data)  # a column no config names
    common = [f"--config={CONFIG}", f"--data.path={data}", f"--trainer.default_root_dir={tmp / 'runs'}"]
    mmtab("fit", *common, "--trainer.max_epochs=2", "--data.batch_size=256")
    checkpoints = sorted(p.name for p in (tmp / "runs").rglob("*.ckpt"))
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints  # the shipped configs keep the last and the best
    ckpt = tmp / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"  # where docs/ says
    assert ckpt.exists()
    return {"tmp": tmp, "data": data, "ckpt": ckpt, "common": common}


def test_fit_writes_a_checkpoint_with_its_preprocessing(trained):
    module, pre = load_checkpoint(trained["ckpt"])
    assert isinstance(module, MultimodalModule) and pre.task.name == "binary" and pre.classes == ["<=50K", ">50K"]
    assert (trained["ckpt"].parent.parent / "config.yaml").exists()


def test_predict_on_the_validation_rows_equals_validate(trained):
    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, save_config_callback=None,
                   args=["validate", *trained["common"], f"--ckpt_path={trained['ckpt']}", "--trainer.logger=false"])
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    out = trained["tmp"] / "valid_predictions.csv"
    mmtab("predict", *trained["common"], f"--ckpt_path={trained['ckpt']}", f"--predictions.output={out}")
    table = pd.read_csv(out)
    assert len(table) == len(cli.datamodule.frames["valid"])
    assert table["loss"].mean() == pytest.approx(metrics["val_loss"], rel=1e-5)
    assert (table["prediction"] == table["income"]).mean() == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    # every column of the file is carried through in its order, so the predictions join back on the ids
    file = pd.read_parquet(trained["data"])
    assert list(table.columns[:file.shape[1]]) == list(file.columns)
    joined = table.merge(file, on="row_id", suffixes=("", "_file"))
    assert len(joined) == len(table) and (joined["age"] == joined["age_file"]).all()


def predict_rows(trained, rows: pd.DataFrame, name: str) -> pd.DataFrame:
    """`mmtab predict` in a fresh process on `rows` written to a CSV file; its output table."""
    path, out = trained["tmp"] / f"{name}.csv", trained["tmp"] / f"{name}_predictions.parquet"
    rows.to_csv(path, index=False)
    mmtab("predict", *trained["common"], f"--ckpt_path={trained['ckpt']}", f"--data.predict_path={path}",
          f"--predictions.output={out}")
    return pd.read_parquet(out)


def test_a_checkpoint_reloaded_in_a_fresh_process_predicts_identically(trained, adult):
    new_rows = adult.iloc[-300:].drop(columns="income").assign(customer_id=range(300))  # not a model input
    from_cli = predict_rows(trained, new_rows, "new_rows")
    assert from_cli["customer_id"].tolist() == list(range(300))  # extra columns are carried through
    module, pre = load_checkpoint(trained["ckpt"])
    here = predict_frame(module, pre, pd.read_csv(trained["tmp"] / "new_rows.csv"))
    np.testing.assert_array_equal(from_cli["prob_>50K"].to_numpy(), here["prob_>50K"].to_numpy())
    assert "loss" not in from_cli.columns  # no labels, no loss


def test_unseen_categories_and_missing_numbers_get_finite_predictions(trained, adult):
    rows = adult.iloc[:4].copy()
    rows["occupation"] = ["Astronaut", None, "Tech-support", "Zookeeper"]
    rows["native-country"] = "Atlantis"
    rows["age"] = [np.nan, 30, np.nan, 200]
    rows["fnlwgt"] = np.nan
    table = predict_rows(trained, rows, "odd_rows")
    probs = table[["prob_<=50K", "prob_>50K"]].to_numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-6)
    assert np.isfinite(table["loss"]).all()


def test_predict_never_overwrites_an_existing_file(trained):
    out = trained["tmp"] / "mine.csv"
    out.write_text("my own file\n")
    proc = mmtab("predict", *trained["common"], f"--ckpt_path={trained['ckpt']}", f"--predictions.output={out}",
                 check=False)
    assert proc.returncode != 0 and "already exists" in proc.stderr
    assert out.read_text() == "my own file\n"
    mmtab("predict", *trained["common"], f"--ckpt_path={trained['ckpt']}", f"--predictions.output={out}",
          "--predictions.overwrite=true")
    assert "prediction" in out.read_text()


def test_top_losses_report(trained):
    proc = mmtab("predict", *trained["common"], f"--ckpt_path={trained['ckpt']}", "--predictions.top_losses=5")
    assert "top 5 losses" in proc.stdout and "occupation" in proc.stdout


def test_validate_and_predict_leave_no_run_folder(trained):
    runs = trained["tmp"] / "runs"
    before = sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))
    mmtab("validate", *trained["common"], f"--ckpt_path={trained['ckpt']}")
    mmtab("predict", *trained["common"], f"--ckpt_path={trained['ckpt']}", "--predictions.top_losses=1")
    assert sorted(str(p.relative_to(runs)) for p in runs.rglob("*")) == before


def test_validate_with_the_best_or_last_checkpoint_in_a_fresh_process(trained):
    import torch

    last = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    state = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint"))
    proc = mmtab("validate", *trained["common"], "--ckpt_path=best")
    best = Path(state["best_model_path"])
    assert f"the best checkpoint by val_loss ({float(state['best_model_score']):.4g}): {best}" in proc.stdout
    # the run's own numbers: validating the chosen file gives the score it was chosen by
    val_loss = float(re.search(r"val_loss\s*│\s*([0-9.]+)", proc.stdout).group(1))
    assert val_loss == pytest.approx(float(state["best_model_score"]), rel=1e-5)
    proc = mmtab("validate", *trained["common"], "--ckpt_path=last")
    assert f"last checkpoint: {trained['ckpt']}" in proc.stdout
    proc = mmtab("validate", *trained["common"], "--ckpt_path=best", "--trainer.default_root_dir=/nonexistent",
                 check=False)
    assert proc.returncode == 2 and "no last.ckpt under '/nonexistent'" in proc.stderr


def test_a_bad_column_stops_fit_before_training(trained):
    proc = mmtab("fit", *trained["common"], "--data.continuous_cols=[age, salary]", check=False)
    assert proc.returncode != 0
    assert "column 'salary' is not in the table" in proc.stderr
    assert "Epoch" not in proc.stdout + proc.stderr


def test_a_fit_prints_what_the_user_needs_and_no_noise(tmp_path, reviews_sample, tiny_bert):
    """A frozen-encoder fusion through the command line: the preprocessing summary, the parts table and
    one line per epoch; no advertising, no deprecation noise, no warning about the deliberately frozen
    (eval-mode) text branch."""
    data = tmp_path / "reviews.parquet"
    reviews_sample.to_parquet(data)
    proc = mmtab("fit", f"--config={ROOT / 'configs' / 'reviews_demo.yaml'}", f"--data.path={data}",
                 f"--data.text_model={tiny_bert}", "--data.max_length=32", "--trainer.max_epochs=2",
                 "--trainer.limit_train_batches=3", f"--trainer.default_root_dir={tmp_path / 'runs'}")
    out = proc.stdout + proc.stderr
    for needed in ("mmtab preprocessing, fitted on the training rows", "cat  Division Name", "trainable",
                   "0 (frozen)", "epoch 0: val_accuracy=", "epoch 1: val_accuracy="):
        assert needed in out, needed
    frozen_row = next(line for line in out.splitlines() if "0 (frozen)" in line)
    assert frozen_row.split()[-2:] == ["-", "-"]  # a frozen part trains with no rate
    # 3 batches against a logging interval of 20; and no progress bar where no terminal watches
    for noise in ("Tip", "eval mode", "Deprecat", "deprecated", "tensorboardX", "Loading weights", "Traceback",
                  "Warning", "logging interval", "━", "it/s"):
        assert noise not in out, (noise, out[-3000:])


def test_lr_find_prints_a_rate_per_part_and_draws_its_curve(trained):
    out = trained["tmp"] / "lr"
    proc = mmtab("lr_find", *trained["common"], "--num_steps=30", f"--plot={out / 'lr.png'}")
    assert "suggested scale" in proc.stdout and "tabular: lr" in proc.stdout and "head: lr" in proc.stdout
    assert (out / "lr.png").stat().st_size > 10_000


def test_a_fit_trainer_carries_only_the_config_s_callbacks(tmp_path):
    """Lightning calls every callback at every hook of every step: the `predictions` writer joins the
    predict subcommand only, and the model's config reaches the checkpoints through the checkpoint
    writer, not a callback (the checkpoint tests above load it)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=False,
                   save_config_callback=None, args=[f"--config={CONFIG}", f"--trainer.default_root_dir={tmp_path}",
                                                    "--trainer.enable_progress_bar=false"])
    # and the thread policy, which reads the clock once a batch and the run queue every 2 s
    assert sorted(type(c).__name__ for c in cli.trainer.callbacks) == ["ModelCheckpoint", "Threads"]
    assert ModelCheckpoint in {type(c) for c in cli.trainer.callbacks}
