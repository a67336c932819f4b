"""A table of one's own in two commands: `mmtab init` decides each column's role from its values, says
why, and writes a config the user owns; `mmtab fit` runs it (or decides the same roles itself when no
config is given)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mmtab.data.roles import infer_roles

from .conftest import ROOT

SHARED = ROOT.parent / "shared" / "data"


def run_mmtab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmtab.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("config, table", [("adult.yaml", SHARED / "adult.parquet"),
                                           ("california_housing.yaml", SHARED / "california_housing.parquet"),
                                           ("reviews_demo.yaml", ROOT / "data" / "womens_clothing_reviews.parquet")])
def test_the_roles_decided_for_each_shipped_table_are_its_configs_choices(config, table):
    """'educational-num' (16 whole-number levels) stays a number as adult.yaml has it; 'Clothing ID'
    (1,206 codes named like an identifier) is categorical as reviews_demo.yaml has it. One difference:
    the reviews' 'Rating' is kept and flagged where the config leaves it out. Alone it explains 64% of
    the recommendation, as California's MedInc explains 48% of a house's value, which is no leak: only
    the user knows that a rating is written with the recommendation, so init says so and leaves the call
    to them."""
    data = yaml.safe_load((ROOT / "configs" / config).read_text())["data"]
    roles = infer_roles(pd.read_parquet(table), data["target"])
    flagged = [r.column for r in roles.columns if r.flagged]
    for role, key in (("categorical", "categorical_cols"), ("continuous", "continuous_cols"), ("text", "text_cols")):
        assert sorted(c for c in roles.names(role) if c not in flagged) == sorted(data.get(key, [])), role
    assert roles.task == data.get("task", roles.task) and not roles.names("left out")
    assert flagged == (["Rating"] if config == "reviews_demo.yaml" else [])


def test_a_table_never_seen_gets_each_role_with_its_reason():
    rng = np.random.default_rng(0)
    n = 1000
    target = rng.integers(0, 2, n)
    words = np.array(["soft", "warm", "fits", "small", "large", "lovely", "thin", "returned", "fabric", "colour"])
    df = pd.DataFrame({
        "order_id": np.arange(10_000, 10_000 + n),  # unique whole numbers: an identifier
        "sku": [f"SKU-{i:05d}" for i in rng.permutation(n)],  # unique strings: an identifier
        "store_code": rng.integers(0, 40, n),  # whole-number codes named like one
        "stars": rng.integers(1, 6, n),  # 5 whole-number levels
        "price": rng.gamma(2.0, 30.0, n).round(2),
        "gift": rng.choice(["yes", "no"], n),
        "country": rng.choice(["FR", "DE", "US", "JP", None], n),
        "note": [" ".join(rng.choice(words, rng.integers(4, 12))) for _ in range(n)],
        "constant": "same",
        "refunded": np.where(rng.random(n) < 0.97, target, 1 - target),  # the target, written after it
        "weight": rng.uniform(0.5, 2.0, n),
        "part": rng.choice(["train", "valid"], n, p=[0.8, 0.2]),
        "bought": target,
    })
    roles = {r.column: r for r in infer_roles(df, "bought").columns}
    expected = {"order_id": "left out", "sku": "left out", "store_code": "categorical", "stars": "categorical",
                "price": "continuous", "gift": "categorical", "country": "categorical", "note": "text",
                "constant": "left out", "refunded": "left out", "weight": "weight", "part": "split",
                "bought": "target"}
    assert {c: r.role for c, r in roles.items()} == expected
    assert "an identifier" in roles["order_id"].reason and "an identifier" in roles["sku"].reason
    assert "a leak" in roles["refunded"].reason and "one value in every row" in roles["constant"].reason
    assert "yes/no" in roles["gift"].reason and "20% missing" in roles["country"].reason

    df["refunded"] = np.where(rng.random(n) < 0.8, target, 1 - target)  # strong, not near-perfect: flagged, kept
    refunded = next(r for r in infer_roles(df, "bought").columns if r.column == "refunded")
    assert refunded.flagged and refunded.role == "categorical" and "CHECK: alone it explains" in refunded.reason


@pytest.fixture(scope="module")
def tables(adult, reviews_sample, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("own_tables")
    adult.sample(800, random_state=3).to_csv(folder / "adult.csv", index=False)
    reviews_sample.head(600).to_parquet(folder / "reviews.parquet")
    pd.read_parquet(SHARED / "california_housing.parquet").sample(800, random_state=3).to_csv(
        folder / "california.csv", index=False)
    return folder


@pytest.mark.parametrize("table, target, extra", [
    ("adult.csv", "income", []),
    ("reviews.parquet", "Recommended IND", ["text_model"]),
])
def test_init_then_fit_then_predict_through_the_command_line(tables, tiny_bert, table, target, extra):
    text_model = [f"--data.text_model={tiny_bert}"] if extra else []
    init = run_mmtab("init", f"--data.path={table}", f"--data.target={target}", "--output=mine/config.yaml",
                     *text_model, cwd=tables)
    assert init.returncode == 0, init.stderr[-2000:]
    assert "the roles of" in init.stdout and f"{target}" in init.stdout
    config = tables / "mine" / "config.yaml"
    written = yaml.safe_load(config.read_text())
    assert written["data"]["path"] == table and written["data"]["target"] == target
    assert "# Written by mmtab init" in config.read_text() and "small_table" in config.read_text()  # < 10k rows

    fit = run_mmtab("fit", f"--config={config}", "--trainer.max_epochs=2", cwd=tables)
    assert fit.returncode == 0 and "epoch 1: val_" in fit.stdout + fit.stderr, fit.stderr[-2000:]
    predict = run_mmtab("predict", f"--config={config}", "--ckpt_path=best", "--predictions.output=out.csv",
                        cwd=tables)
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert len(pd.read_csv(tables / "out.csv")) > 0
    (tables / "out.csv").unlink()

    again = run_mmtab("init", f"--data.path={table}", f"--data.target={target}", "--output=mine/config.yaml",
                      cwd=tables)
    assert again.returncode == 2 and "never replaces a file" in again.stderr
    config.unlink()


def test_fit_without_a_config_decides_the_same_roles_and_saves_the_config_it_ran(tables):
    fit = run_mmtab("fit", "--data.path=california.csv", "--data.target=MedHouseVal", "--trainer.max_epochs=2",
                    "--trainer.default_root_dir=runs_cal", cwd=tables)
    out = fit.stdout + fit.stderr
    assert fit.returncode == 0, out[-2000:]
    assert "MedInc" in fit.stdout and "continuous" in fit.stdout and "recipe configs/small_table_regression.yaml" in out
    (saved,) = (tables / "runs_cal").rglob("config.yaml")
    assert yaml.safe_load(saved.read_text())["data"]["continuous_cols"][0] == "MedInc"
    predict = run_mmtab("predict", f"--config={saved}", "--ckpt_path=best", "--predictions.output=cal.csv",
                        "--trainer.default_root_dir=runs_cal", cwd=tables)
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert "prediction" in pd.read_csv(tables / "cal.csv").columns


def test_a_table_written_as_an_export_writes_it_goes_through_init_fit_and_predict(tiny_bert, tmp_path):
    """benchmarks/new_table_case.py: a date and a price written as text, an age with its unit, an id, two
    texts, a yes/no target, a leak and a split column (800 of its rows, to keep the test short)."""
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "new_table_case.py"), "--output", "all.csv"],
                   check=True, cwd=tmp_path, capture_output=True)
    pd.read_csv(tmp_path / "all.csv").sample(800, random_state=0).to_csv(tmp_path / "listings.csv", index=False)
    init = run_mmtab("init", "--data.path=listings.csv", "--data.target=recommended", "--output=listings.yaml",
                     f"--data.text_model={tiny_bert}", cwd=tmp_path)
    assert init.returncode == 0, init.stderr[-2000:]
    data = yaml.safe_load((tmp_path / "listings.yaml").read_text())["data"]
    assert data["date_cols"] == ["posted"] and {"price", "age"} <= set(data["continuous_cols"])
    assert data["text_cols"] == ["Title", "Review Text"] and data["split_col"] == "split"
    assert "listing_id" not in str(data) and "may be a leak" in init.stderr and "'Rating'" in init.stderr
    fit = run_mmtab("fit", "--config=listings.yaml", "--trainer.max_epochs=2", cwd=tmp_path)
    out = fit.stdout + fit.stderr
    assert fit.returncode == 0 and "epoch 1: val_" in out, out[-2000:]
    assert "cont price: " in out and "numbers written as text" in out and "posted.month" in out
    predict = run_mmtab("predict", "--config=listings.yaml", "--ckpt_path=best", "--predictions.output=out.csv",
                        cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-2000:]
    assert {"listing_id", "prob_yes"} <= set(pd.read_csv(tmp_path / "out.csv").columns)  # ids join back
