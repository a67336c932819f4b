"""Every bad input a user can give ends, through the real command line, in one message that names the
column or value and what to do: exit code 2, no traceback, and nothing the user owns created or changed.
The table "When the input is wrong" of docs/errors-and-artifacts.md lists each case below with the message
it shows."""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mmtab.data.splits import stratified_split

from .conftest import ROOT

CONFIG = str(ROOT / "configs" / "adult.yaml")
ERRORS_PAGE = (ROOT / "docs" / "errors-and-artifacts.md").read_text()


def csv(frame: pd.DataFrame, tmp: Path, name: str = "data.csv", **kwargs) -> Path:
    frame.to_csv(tmp / name, index=False, **kwargs)
    return tmp / name


def with_values(column: str, rows: list[int], value, *, as_object: bool = False):
    def make(df: pd.DataFrame, tmp: Path) -> list[str]:
        df = df.copy()
        if as_object:
            df[column] = df[column].astype(object)
        df.loc[rows, column] = value
        return [f"--data.path={csv(df, tmp)}"]
    return make


def weights(values: Callable[[pd.DataFrame], np.ndarray]):
    def make(df: pd.DataFrame, tmp: Path) -> list[str]:
        return [f"--data.path={csv(df.assign(w=values(df)), tmp)}", "--data.weight_col=w"]
    return make


def duplicate_header(df: pd.DataFrame, tmp: Path) -> list[str]:
    path = csv(df, tmp)
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace("fnlwgt", "age")
    path.write_text("\n".join(lines) + "\n")
    return [f"--data.path={path}"]


def zero_weights_in_validation(df: pd.DataFrame, tmp: Path) -> list[str]:
    part = np.where(np.arange(len(df)) % 5 == 0, "valid", "train")
    return [f"--data.path={csv(df.assign(part=part, w=np.where(part == 'valid', 0.0, 1.0)), tmp)}",
            "--data.weight_col=w", "--data.split_col=part"]


def class_only_in_validation(df: pd.DataFrame, tmp: Path) -> list[str]:
    part = np.where(np.arange(len(df)) % 5 == 0, "valid", "train")
    df = df.assign(part=part)
    df.loc[[0, 5], "income"] = "unknown"  # rows 0 and 5 are validation rows
    return [f"--data.path={csv(df, tmp)}", "--data.split_col=part"]


def empty_file(df: pd.DataFrame, tmp: Path) -> list[str]:
    (tmp / "data.csv").write_text("")
    return [f"--data.path={tmp / 'data.csv'}"]


def latin1_csv(df: pd.DataFrame, tmp: Path) -> list[str]:
    df = df.copy()
    df.loc[3, "occupation"] = "Caf\u00e9-owner"  # é is one byte, 0xe9, in Latin-1: not UTF-8
    return [f"--data.path={csv(df, tmp, encoding='latin-1')}"]


def gzip_named_csv(df: pd.DataFrame, tmp: Path) -> list[str]:
    df.to_csv(tmp / "data.csv", index=False, compression="gzip")
    return [f"--data.path={tmp / 'data.csv'}"]


def truncated_parquet(df: pd.DataFrame, tmp: Path) -> list[str]:
    df.to_parquet(tmp / "data.parquet")
    whole = (tmp / "data.parquet").read_bytes()
    (tmp / "data.parquet").write_bytes(whole[: len(whole) // 2])  # a copy cut short
    return [f"--data.path={tmp / 'data.parquet'}"]


def a_module_as_text_model(df: pd.DataFrame, tmp: Path) -> list[str]:
    # a module of that name in the working directory: naming it must not run it (it would write 'ran')
    (tmp / "reviews_model.py").write_text("open('ran', 'w').write('imported')\n")
    return [f"--data.path={csv(df.assign(note='a few words'), tmp)}", "--data.text_cols=[note]",
            "--data.text_model=reviews_model"]


def a_table_as_init_from(df: pd.DataFrame, tmp: Path) -> list[str]:
    (tmp / "table.csv").write_text("age,income\n39,<=50K\n")
    return [f"--data.path={csv(df, tmp)}", f"--model.init_from={tmp / 'table.csv'}"]


# (case, what makes it, the words the message must contain)
CASES: list[tuple[str, Callable[[pd.DataFrame, Path], list[str]], str]] = [
    ("a listed column is missing", lambda df, tmp: [f"--data.path={csv(df.drop(columns='age'), tmp)}"],
     "column 'age' is not in the table"),
    ("a ';'-separated CSV", lambda df, tmp: [f"--data.path={csv(df, tmp, sep=';')}"], "the file looks ';'-separated"),
    ("two columns with the same name", duplicate_header, "column 'age' appears 2 times in the header"),
    ("an empty file", empty_file, "the file is empty"),
    ("words in a continuous column", with_values("age", [3, 8], "unknown", as_object=True),
     "column 'age' in continuous_cols has non-numeric values (row 3: 'unknown'"),
    ("inf in a continuous column", with_values("age", [4], np.inf, as_object=True),
     "column 'age' in continuous_cols has infinite values (row 4: inf)"),
    ("a target with missing values", with_values("income", [2, 7], None), "target column 'income' has missing values"),
    ("a target with one class", lambda df, tmp: [f"--data.path={csv(df.assign(income='<=50K'), tmp)}"],
     "target 'income' has 1 class in the training rows"),
    ("a class only in the validation rows", class_only_in_validation,
     "valid split: target 'income' has classes that are not in the training rows (first rows: 0: 'unknown'"),
    ("a negative weight", weights(lambda df: np.where(np.arange(len(df)) == 6, -1.0, 1.0)),
     "weight column 'w' has negative values (first rows: 6)"),
    ("a missing or infinite weight", weights(lambda df: np.where(np.arange(len(df)) == 9, np.inf, 1.0)),
     "weight column 'w' has missing or infinite values (first rows: 9)"),
    ("weights all zero", weights(lambda df: np.zeros(len(df))), "weight column 'w' is 0 in every row"),
    ("weights all zero in one split", zero_weights_in_validation, "valid split: weight column 'w' is 0 in every row"),
    ("an empty split", lambda df, tmp: [f"--data.path={csv(df.assign(part='train'), tmp)}", "--data.split_col=part"],
     "the valid split has no rows"),
    ("two split options at once", lambda df, tmp: [f"--data.path={csv(df, tmp)}", "--data.valid_pct=0.1",
                                                   "--data.split_col=part"],
     "data.valid_pct and data.split_col each choose the validation rows: keep one"),
    ("a size the data decides, set in the config", lambda df, tmp: [f"--data.path={csv(df, tmp)}",
                                                                    "--model.net.tabular.n_cont=3"],
     "model.net.tabular.n_cont is decided by the data"),
    ("a data file that does not exist", lambda df, tmp: [f"--data.path={tmp / 'nope.csv'}"], "does not exist"),
    ("a data path that is a folder", lambda df, tmp: [f"--data.path={tmp}"],
     "is a folder: give the path of a .csv, .tsv or .parquet file"),
    ("a CSV in Latin-1, not UTF-8", latin1_csv, "the file is not UTF-8 text (byte 0xe9"),
    ("a gzip-compressed file named .csv", gzip_named_csv, "the file is gzip-compressed, not a plain .csv file"),
    ("a Parquet file cut short", truncated_parquet, "it is not a readable Parquet file"),
    ("a header and no rows", lambda df, tmp: [f"--data.path={csv(df.head(0), tmp)}"],
     "the file has a header and no rows of data"),
    ("Lightning's FSDP strategy", lambda df, tmp: [f"--data.path={csv(df, tmp)}", "--trainer.strategy=fsdp"],
     "trainer.strategy fsdp: mmtab shards a model through Lightning's ModelParallelStrategy"),
    ("trainer settings Lightning refuses", lambda df, tmp: [f"--data.path={csv(df, tmp)}", "--trainer.accelerator=cpu",
                                                            "--trainer.devices=0"],
     "the trainer settings cannot run here: `Trainer(devices='0')` value is not a valid input"),
    ("a Python module named as the text model", a_module_as_text_model,
     "text model 'reviews_model' is an installed Python module, not a model"),
    ("a table given as init_from", a_table_as_init_from,
     "cannot be read (it is not the zip archive torch.save writes): it is cut short, damaged or not a checkpoint"),
    ("a thread count below 1", lambda df, tmp: [f"--data.path={csv(df, tmp)}", "--threads.count=0"],
     "threads.count must be at least 1, got 0"),
    pytest.param("a GPU asked for where there is none",
                 lambda df, tmp: [f"--data.path={csv(df, tmp)}", "--trainer.accelerator=gpu"],
                 "trainer.accelerator is 'gpu', and torch sees no such device on this machine",
                 marks=pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                                          reason="this machine has a GPU")),
]


@pytest.fixture(scope="module")
def rows(adult) -> pd.DataFrame:
    return adult.sample(600, random_state=1).reset_index(drop=True)


def tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_mmtab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmtab.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("case, make, words", CASES, ids=[(c.values if hasattr(c, "values") else c)[0] for c in CASES])
def test_a_bad_input_ends_in_one_clear_message(case, make, words, rows, tmp_path):
    args = make(rows, tmp_path)
    before = tree(tmp_path)
    proc = run_mmtab("fit", f"--config={CONFIG}", *args, f"--trainer.default_root_dir={tmp_path / 'runs'}",
                     cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert words in proc.stderr, out[-3000:]
    assert "Traceback" not in out
    assert tree(tmp_path) == before  # no run folder, no file created or changed
    assert case in ERRORS_PAGE and words in ERRORS_PAGE, "docs/errors-and-artifacts.md lists this case and its message"


def test_a_predict_file_missing_a_column_is_named_before_predicting(rows, fitted, tmp_path):
    data, ckpt = fitted
    new = csv(rows.drop(columns=["income", "age"]).assign(note="extra columns are fine"), tmp_path, "new.csv")
    before = tree(tmp_path)
    proc = run_mmtab("predict", f"--config={CONFIG}", f"--data.path={data}", f"--ckpt_path={ckpt}",
                     f"--data.predict_path={new}", f"--predictions.output={tmp_path / 'out.csv'}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr
    words = "column 'age' is not in the table"
    assert f"predict file '{new}'" in proc.stderr and words in proc.stderr, proc.stderr[-2000:]
    assert tree(tmp_path) == before
    assert "a predict file missing a column" in ERRORS_PAGE

    (tmp_path / "out.csv").mkdir()  # a folder where the predictions file should go, even with overwrite
    proc = run_mmtab("predict", f"--config={CONFIG}", f"--data.path={data}", f"--ckpt_path={ckpt}",
                     f"--predictions.output={tmp_path / 'out.csv'}", "--predictions.overwrite=true", cwd=tmp_path)
    words = "is a folder: name a file in it"
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not list((tmp_path / "out.csv").iterdir())
    assert "a predictions output that is a folder" in ERRORS_PAGE and words in ERRORS_PAGE


def test_a_diverging_run_stops_naming_the_step_and_keeps_no_bad_checkpoint(rows, tmp_path):
    data = csv(rows, tmp_path)
    proc = run_mmtab("fit", f"--config={CONFIG}", f"--data.path={data}", "--model.lr=1e6", "--data.batch_size=64",
                     f"--trainer.default_root_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    words = "the training loss became"
    assert words in proc.stderr and "at step" in proc.stderr and "(epoch 0)" in proc.stderr, proc.stderr[-2000:]
    assert not list((tmp_path / "runs").rglob("*.ckpt"))
    assert "a learning rate that diverges" in ERRORS_PAGE and words in ERRORS_PAGE


def test_a_csv_saved_with_a_byte_order_mark_trains(rows, tmp_path):
    """Excel's "CSV UTF-8" starts the file with a byte-order mark; the header's first name is 'age',
    not '\\ufeffage'."""
    data = csv(rows, tmp_path, encoding="utf-8-sig")
    assert data.read_bytes().startswith(b"\xef\xbb\xbfage")
    proc = run_mmtab("fit", f"--config={CONFIG}", f"--data.path={data}", "--trainer.max_epochs=1",
                     f"--trainer.default_root_dir={tmp_path / 'runs'}", cwd=tmp_path)
    assert proc.returncode == 0 and "epoch 0: val_accuracy=" in proc.stdout + proc.stderr, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def fitted(rows, tmp_path_factory) -> tuple[Path, Path]:
    """A table and the last checkpoint of a 1-epoch fit of adult.yaml on it."""
    tmp = tmp_path_factory.mktemp("fitted")
    data = csv(rows, tmp)
    fit = run_mmtab("fit", f"--config={CONFIG}", f"--data.path={data}", "--trainer.max_epochs=1",
                    f"--trainer.default_root_dir={tmp / 'runs'}", cwd=tmp)
    assert fit.returncode == 0, fit.stderr[-2000:]
    (ckpt,) = (tmp / "runs").rglob("last.ckpt")
    return data, ckpt


class Payload:
    """Any object: a pickled one is code that loading would run."""


def cut_short(ckpt: Path, tmp: Path) -> Path:
    (tmp / "cut.ckpt").write_bytes(ckpt.read_bytes()[:5000])
    return tmp / "cut.ckpt"


def a_table(ckpt: Path, tmp: Path) -> Path:
    (tmp / "table.csv").write_text("age,income\n39,<=50K\n")
    return tmp / "table.csv"


def pickled(ckpt: Path, tmp: Path) -> Path:
    torch.save({**torch.load(ckpt, weights_only=True), "payload": Payload()}, tmp / "pickled.ckpt")
    return tmp / "pickled.ckpt"


def another_model(ckpt: Path, tmp: Path) -> Path:
    state = torch.load(ckpt, weights_only=True)
    first = next(k for k in state["state_dict"] if k.endswith("weight") and state["state_dict"][k].ndim == 2)
    state["state_dict"][first] = torch.zeros(3, 3)  # as a fit with other layer sizes would have it
    torch.save(state, tmp / "other.ckpt")
    return tmp / "other.ckpt"


@pytest.mark.parametrize("case, make, words", [
    ("a checkpoint cut short", cut_short, "it is cut short, damaged or not a checkpoint"),
    ("a table given as the checkpoint", a_table, "not a checkpoint; give a .ckpt file that mmtab fit wrote"),
    ("a checkpoint holding pickled objects", pickled, "holds pickled Python objects, which loading would run as code"),
    ("a checkpoint of another model", another_model, "the checkpoint holds another model than this config builds"),
])
def test_a_bad_checkpoint_ends_in_one_clear_message(case, make, words, fitted, tmp_path):
    data, ckpt = fitted
    bad = make(ckpt, tmp_path)
    before = tree(tmp_path)
    proc = run_mmtab("validate", f"--config={CONFIG}", f"--data.path={data}", f"--ckpt_path={bad}", cwd=tmp_path)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert tree(tmp_path) == before
    assert case in ERRORS_PAGE and words in ERRORS_PAGE, "docs/errors-and-artifacts.md lists this case and its message"


def test_a_categorical_column_of_another_type_in_predict_is_named(fitted, tmp_path):
    """Numbers where training had text: every value is an unseen category, which is legal (predict
    goes on) but never silent."""
    data, ckpt = fitted
    rows = pd.read_csv(data).head(40)
    rows["workclass"] = np.arange(40) % 4  # codes, where training had 'Private', 'Self-emp-not-inc', ...
    new = csv(rows, tmp_path, "codes.csv")
    proc = run_mmtab("predict", f"--config={CONFIG}", f"--data.path={data}", f"--ckpt_path={ckpt}",
                     f"--data.predict_path={new}", f"--predictions.output={tmp_path / 'out.csv'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    words = "column 'workclass': none of its 40 values (first rows: 0: 0, 1: 1, 2: 2, 3: 3) is a category"
    assert words in proc.stderr and "numbers where training had text" in proc.stderr, proc.stderr[-2000:]
    assert "column 'education'" not in proc.stderr  # the columns that match stay quiet


def test_a_cache_folder_that_is_a_file_is_named_before_any_text_is_encoded(reviews_sample, tiny_bert, tmp_path):
    data = tmp_path / "reviews.parquet"
    reviews_sample.to_parquet(data)
    (tmp_path / "cache").write_text("not a folder")
    before = tree(tmp_path)
    config = ROOT / "configs" / "reviews_demo.yaml"
    proc = subprocess.run([sys.executable, "-m", "mmtab.cli", "fit", f"--config={config}", f"--data.path={data}",
                           f"--data.text_model={tiny_bert}", "--data.max_length=32",
                           f"--trainer.default_root_dir={tmp_path / 'runs'}"], capture_output=True, text=True,
                          cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                             "MMTAB_CACHE_DIR": str(tmp_path / "cache")})
    words = f"the text-embedding cache folder '{tmp_path / 'cache'}' cannot be made"
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "text embeddings for" not in proc.stderr  # nothing was encoded first
    assert tree(tmp_path) == before
    assert "a cache folder that is a file" in ERRORS_PAGE and "cannot be made" in ERRORS_PAGE


def test_a_model_folder_that_needs_its_own_code_is_refused_without_running_it(reviews_sample, tiny_bert, tmp_path):
    model = tmp_path / "custom_model"
    shutil.copytree(tiny_bert, model)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="my_bert", auto_map={"AutoModel": "modeling_my_bert.MyBert"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "modeling_my_bert.py").write_text("open('ran', 'w').write('the model folder ran code')\n")
    data = tmp_path / "reviews.parquet"
    reviews_sample.to_parquet(data)
    before = tree(tmp_path)
    proc = run_mmtab("fit", f"--config={ROOT / 'configs' / 'reviews_demo.yaml'}", f"--data.path={data}",
                     f"--data.text_model={model}", f"--trainer.default_root_dir={tmp_path / 'runs'}", cwd=tmp_path)
    words = "needs Python code of its own to load (config.json auto_map names AutoModel: modeling_my_bert.MyBert)"
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr[-3000:]
    assert "--model.net.text.trust_remote_code true" in proc.stderr
    assert "Traceback" not in proc.stderr and "Union subtypes" not in proc.stderr
    assert tree(tmp_path) == before  # nothing ran ('ran' not written), no run folder
    assert "a model folder that needs its own code" in ERRORS_PAGE and "needs Python code of its own" in ERRORS_PAGE


def test_a_full_disk_while_writing_a_checkpoint_is_one_message_and_leaves_no_partial_file(rows, tmp_path):
    """A file-size limit (`ulimit -f`) fails the checkpoint's write as a full disk does."""
    data = csv(rows, tmp_path)

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))  # logs fit; a checkpoint does not

    proc = subprocess.run([sys.executable, "-m", "mmtab.cli", "fit", f"--config={CONFIG}", f"--data.path={data}",
                           "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path / 'runs'}"],
                          capture_output=True, text=True, cwd=tmp_path, preexec_fn=limit_file_size,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    words = "the write stopped short"
    assert proc.returncode == 1 and "mmtab: error: cannot write" in proc.stderr, proc.stderr[-3000:]
    assert words in proc.stderr and "nothing was replaced, and the partial file was removed" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "runs").rglob("*.ckpt")) and not list((tmp_path / "runs").rglob("*.tmp"))
    assert "a disk full while writing a checkpoint" in ERRORS_PAGE and "cannot write" in ERRORS_PAGE


def test_a_class_too_rare_for_the_validation_split_is_reported_undefined_never_as_zero(adult, tmp_path):
    """1 positive in 2,000 rows: it must train, so the validation split has none, and AUROC and F1 of
    the positive class cannot be measured there. With 2 positives, one lands in each split."""
    df = adult.sample(2000, random_state=2).reset_index(drop=True).assign(income="<=50K")
    df.loc[17, "income"] = ">50K"
    proc = run_mmtab("fit", f"--config={CONFIG}", f"--data.path={csv(df, tmp_path)}", "--trainer.max_epochs=1",
                     f"--trainer.default_root_dir={tmp_path / 'runs'}", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "the valid split (400 rows) has no rows of class '>50K': val_auroc" in out
    assert "val_auroc=undefined" in out and "val_f1=undefined" in out and "val_auroc=0.0000" not in out
    assert "val_accuracy=" in out and "val_loss=" in out  # what can be measured still is
    assert "a class too rare for the validation split" in ERRORS_PAGE

    df.loc[18, "income"] = ">50K"
    is_valid = stratified_split(df["income"], len(df), 0.2, seed=42)
    assert (df["income"][is_valid] == ">50K").sum() == 1 and (df["income"][~is_valid] == ">50K").sum() == 1
