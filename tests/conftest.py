"""Shared fixtures: real data (the adult table shipped in data/), small frames with the awkward cases
(missing values, rare and unseen levels, weights), and a helper that trains a few steps."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest

from mmtab import FusionModel, MultimodalModule, TabularMLP, TabularTextDataModule

ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "data" / "adult.parquet"
ADULT_CAT = ["workclass", "education", "marital-status", "occupation", "relationship", "race", "gender",
             "native-country"]
ADULT_CONT = ["age", "fnlwgt", "educational-num", "capital-gain", "capital-loss", "hours-per-week"]


@pytest.fixture(scope="session")
def adult() -> pd.DataFrame:
    return pd.read_parquet(ADULT)


@pytest.fixture(scope="session")
def adult_sample(adult: pd.DataFrame) -> pd.DataFrame:
    """4,000 real rows: enough to see a loss fall in a few dozen steps, small enough for seconds."""
    return adult.sample(4000, random_state=0).reset_index(drop=True)


@pytest.fixture
def messy() -> pd.DataFrame:
    """A frame with missing numbers and categories, rare levels, a weight column and a binary target."""
    rng = np.random.default_rng(0)
    n = 600
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    colour[:3] = "violet"  # rare: pooled into unknown
    colour[10:20] = None
    x = rng.normal(size=n)
    x[5:15] = np.nan
    size = rng.uniform(0, 10, n)
    logit = 1.5 * (colour == "red") + x.clip(-3, 3) * np.where(np.isnan(x), 0, 1) - 0.2 * size + 1
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-np.nan_to_num(logit)))).astype(int)
    return pd.DataFrame({"colour": colour, "x": x, "size": size, "w": rng.uniform(0.5, 2, n), "y": y})


def adult_datamodule(frame: pd.DataFrame, **kwargs) -> TabularTextDataModule:
    kwargs = {"batch_size": 256, "seed": 0, **kwargs}
    return TabularTextDataModule.from_frame(frame, target="income", categorical_cols=ADULT_CAT,
                                            continuous_cols=ADULT_CONT, **kwargs)


def tabular_module(dm: TabularTextDataModule, *, layers=(32, 16), **kwargs) -> MultimodalModule:
    model = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=list(layers)))
    return MultimodalModule(model, task=dm.fitted_task, **{"lr": 1e-2, **kwargs})


def quiet_trainer(**kwargs) -> pl.Trainer:
    kwargs = {"max_epochs": 1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
              "enable_model_summary": False, "accelerator": "cpu", "devices": 1, **kwargs}
    return pl.Trainer(**kwargs)
