"""k-fold cross-validation: folds that cover every row once, stratified; `mmtab cv` is k ordinary
runs (each fold's score equals the single-fold run's), with every metric's mean and spread and the
out-of-fold predictions in one file."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmtab.cross_validation import next_version
from mmtab.data.splits import fold_of_rows

from .conftest import ROOT

SMALL = str(ROOT / "configs" / "small_table.yaml")
SMALL_TEXT = str(ROOT / "configs" / "small_table_text.yaml")
SMALL_REGRESSION = str(ROOT / "configs" / "small_table_regression.yaml")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from("abc"), min_size=6, max_size=60), st.integers(2, 6), st.integers(0, 99))
def test_every_row_is_in_one_fold_and_every_class_spread_evenly(labels, folds, seed):
    labels = pd.Series(labels)
    fold = fold_of_rows(labels, len(labels), folds, seed)
    assert set(fold) <= set(range(folds))
    sizes = np.bincount(fold, minlength=folds)
    assert sizes.max() - sizes.min() <= 1
    for cls in labels.unique():
        per_fold = np.bincount(fold[labels.to_numpy() == cls], minlength=folds)
        assert per_fold.max() - per_fold.min() <= 1
    np.testing.assert_array_equal(fold, fold_of_rows(labels, len(labels), folds, seed))  # fixed by the seed


def mmtab(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmtab.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cv")
    frame = pd.read_parquet(ROOT / "data" / "adult_weak_text.parquet").sample(900, random_state=0)
    frame = frame.drop(columns="split").reset_index(drop=True).assign(row_id=lambda d: np.arange(len(d)) + 1000)
    frame.to_parquet(folder / "table.parquet")
    return folder, frame


def test_cv_is_k_ordinary_runs_and_keeps_every_row_s_out_of_fold_prediction(small_table):
    folder, frame = small_table
    common = [f"--config={SMALL}", f"--data.path={folder / 'table.parquet'}", "--data.split_col=null",
              "--data.folds=3", "--trainer.max_epochs=2"]
    cv = mmtab("cv", *common, f"--trainer.default_root_dir={folder / 'runs'}", cwd=folder)
    assert cv.returncode == 0, cv.stderr[-3000:]
    out = folder / "runs" / "cv" / "version_0"
    summary = json.loads((out / "cv.json").read_text())
    assert summary["folds"] == 3 and len(summary["per_fold"]) == 3
    for name, mean in summary["mean"].items():
        values = [fold[name] for fold in summary["per_fold"]]
        assert mean == pytest.approx(np.mean(values)) and summary["std"][name] == pytest.approx(np.std(values, ddof=1))
    assert f"test_auroc: {summary['mean']['test_auroc']:.4f} +- {summary['std']['test_auroc']:.4f}" in cv.stdout

    oof = pd.read_csv(out / "oof_predictions.csv")
    assert sorted(oof["row_id"]) == sorted(frame["row_id"])  # every row once, ids carried through
    assert list(oof.columns[:frame.shape[1]]) == list(frame.columns) and set(oof["fold"]) == {0, 1, 2}
    for fold, rows in oof.groupby("fold"):  # the predictions score as the fold's test metric says
        accuracy = (rows["prediction"] == rows["income"]).mean()
        assert accuracy == pytest.approx(summary["per_fold"][fold]["test_accuracy"], abs=1e-6)

    # fold 1 alone, as a user would run it: the same score
    single = [*common, "--data.fold=1", f"--trainer.default_root_dir={folder / 'single'}"]
    assert mmtab("fit", *single, cwd=folder).returncode == 0
    test = mmtab("test", *single, "--ckpt_path=best", cwd=folder)
    assert test.returncode == 0, test.stderr[-3000:]
    auroc = float(re.search(r"test_auroc\W+([0-9.]+)", test.stdout + test.stderr).group(1))
    assert auroc == pytest.approx(summary["per_fold"][1]["test_auroc"], abs=1e-4)

    assert next_version(folder / "runs" / "cv") == out.parent / "version_1"  # a second cv replaces nothing


def test_cv_runs_the_small_table_text_and_regression_recipes(small_table, tiny_bert):
    folder, _ = small_table
    text = mmtab("cv", f"--config={SMALL_TEXT}", f"--data.path={folder / 'table.parquet'}", "--data.split_col=null",
                 "--data.folds=2", "--trainer.max_epochs=1", f"--data.text_model={tiny_bert}", "--data.max_length=32",
                 f"--trainer.default_root_dir={folder / 'text_runs'}", cwd=folder)
    assert text.returncode == 0, text.stderr[-3000:]
    assert "mmtab cv over 2 folds" in text.stdout and "test_auroc" in text.stdout
    regression = mmtab("cv", f"--config={SMALL_REGRESSION}", "--data.split_col=null", "--data.folds=2",
                       "--trainer.max_epochs=1", f"--trainer.default_root_dir={folder / 'regression_runs'}", cwd=ROOT)
    assert regression.returncode == 0, regression.stderr[-3000:]
    assert "test_rmse" in regression.stdout
    oof = pd.read_csv(next((folder / "regression_runs").rglob("oof_predictions.csv")))
    assert len(oof) == 4000 and oof["MedHouseVal"].notna().all()  # the shipped table, every row once


@pytest.mark.parametrize("args, words", [
    ([], "mmtab cv needs data.folds"),
    (["--data.folds=3"], "data.folds chooses the test rows and takes the validation rows from the other folds; "
                         "data.split_col choose rows too"),
    (["--data.split_col=null", "--data.folds=3", "--data.fold=3"], "data.fold must be one of 0..2"),
])
def test_a_cv_set_up_wrongly_ends_in_one_message(small_table, args, words):
    folder, _ = small_table
    proc = mmtab("cv", f"--config={SMALL}", f"--data.path={folder / 'table.parquet'}", *args,
                 f"--trainer.default_root_dir={folder / 'wrong'}", cwd=folder)
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not (folder / "wrong").exists()
