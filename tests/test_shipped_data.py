"""The shipped derived tables are what their builders say they are: rebuilt from data/, each is the same file."""

import importlib.util

import pandas as pd

from .conftest import ROOT


def test_the_weak_text_case_rebuilds_identically_and_its_text_is_weak():
    spec = importlib.util.spec_from_file_location("weak_text_case", ROOT / "benchmarks" / "weak_text_case.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    shipped = pd.read_parquet(builder.OUT)
    pd.testing.assert_frame_equal(builder.build(), shipped)
    assert shipped["split"].value_counts().to_dict() == {"train": 3000, "valid": 1000}
    # the only link from text to target: which pool the review came from (0.65 vs 0.35 positive)
    reviews = pd.read_parquet(ROOT / "data" / "womens_clothing_reviews.parquet")
    text = (reviews["Title"].fillna("") + ". " + reviews["Review Text"]).str.lstrip(". ")
    positive = shipped["review"].isin(set(text[reviews["Recommended IND"] == 1]))
    rich = shipped["income"] == ">50K"
    assert 0.55 < positive[rich].mean() < 0.75 and 0.25 < positive[~rich].mean() < 0.45


def test_the_small_regression_case_rebuilds_identically():
    spec = importlib.util.spec_from_file_location("small_regression_case",
                                                  ROOT / "benchmarks" / "small_regression_case.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    shipped = pd.read_parquet(builder.OUT)
    pd.testing.assert_frame_equal(builder.build(), shipped)
    assert shipped["split"].value_counts().to_dict() == {"train": 3000, "valid": 1000}
    assert (shipped["MedHouseVal"] > 0).all()  # positive: the case for the docs' log1p advice
