"""Property tests: on any frame (NaN, inf, huge and tiny numbers, unicode, mixed types in object
columns, empty text) the preprocessor either raises the documented error or returns finite tensors,
and its saved state reproduces it exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmtab import ColumnSpec, DataValidationError, PreprocessingOptions, TabularPreprocessor, TabularTextDataModule

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=False), st.integers(-10**12, 10**12),
                    st.sampled_from([1e300, -1e300, 1.7e308, 1e-300, 5e-324, 0.0, np.nan]))
CELLS = st.one_of(st.none(), st.text(max_size=8), st.integers(-5, 5), st.floats(allow_nan=True),
                  st.booleans())  # mixed types in one object column
TEXTS = st.one_of(st.none(), st.just(""), st.just("   "), st.text(max_size=30))


@st.composite
def frames(draw, min_rows: int = 1) -> pd.DataFrame:
    """Mostly frames a user could mean (missing values, extremes, unicode, mixed types), and now and
    then one bad value (inf, a word among numbers, a missing weight), so both outcomes are exercised."""
    n = draw(st.integers(min_rows, 40))
    column = lambda values: draw(st.lists(values, min_size=n, max_size=n))  # noqa: E731
    numbers: list = column(NUMBERS)
    weights: list = column(st.floats(0.1, 10))
    flaw = draw(st.sampled_from(["none"] * 6 + ["inf", "word", "numbers as text", "missing weight"]))
    i = draw(st.integers(0, n - 1))
    if flaw == "inf":
        numbers[i] = draw(st.sampled_from([np.inf, -np.inf]))
    elif flaw == "word":
        numbers[i] = draw(st.sampled_from(["n/a", "seven", "1,5"]))
    elif flaw == "numbers as text":
        numbers = [None if pd.isna(v) else str(v) for v in numbers]
    elif flaw == "missing weight":
        weights[i] = np.nan
    return pd.DataFrame({"c": pd.Series(column(CELLS), dtype=object), "x": pd.Series(numbers, dtype=object),
                         "t": pd.Series(column(TEXTS), dtype=object),
                         "y": column(st.sampled_from(["yes", "no"])), "w": weights})


SPEC = ColumnSpec(target="y", categorical=["c"], continuous=["x"], weight="w")


def transform_or_documented_error(frame: pd.DataFrame) -> tuple[TabularPreprocessor, dict] | None:
    try:
        pre = TabularPreprocessor(SPEC, options=PreprocessingOptions(min_category_count=1)).fit(frame)
        return pre, pre.transform(frame)
    except DataValidationError:
        return None


@settings(max_examples=150, deadline=None)
@given(frames())
def test_the_preprocessor_returns_finite_tensors_or_the_documented_error(frame):
    result = transform_or_documented_error(frame)
    if result is None:
        return
    pre, out = result
    assert torch.isfinite(out["cont"]).all(), (frame["x"].tolist(), out["cont"])
    assert (out["cat"] >= 0).all() and (out["cat"] < torch.tensor(pre.cardinalities)).all()
    assert torch.isfinite(out["weight"]).all() and (out["weight"] >= 0).all()


@settings(max_examples=100, deadline=None)
@given(frames(), frames())
def test_saved_state_transforms_any_frame_exactly_as_the_fitted_preprocessor(train, other):
    result = transform_or_documented_error(train)
    if result is None:
        return
    pre, _ = result
    loaded = TabularPreprocessor.from_state_dict(pre.state_dict())
    assert loaded.state_dict() == pre.state_dict()
    try:
        expected = pre.transform(other)
    except DataValidationError as error:
        try:
            loaded.transform(other)
        except DataValidationError as again:
            assert str(again) == str(error)
            return
        raise AssertionError("the loaded preprocessor accepted what the fitted one refused") from error
    got = loaded.transform(other)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames(min_rows=12))
def test_the_datamodule_serves_finite_batches_or_the_documented_error(frame):
    dm = TabularTextDataModule.from_frame(frame, target="y", categorical_cols=["c"], continuous_cols=["x"],
                                          weight_col="w", min_category_count=1, batch_size=4, valid_pct=0.25)
    try:
        dm.setup("fit")
        batches = list(dm.train_dataloader()) + list(dm.val_dataloader())
    except DataValidationError:
        return
    for batch in batches:
        assert torch.isfinite(batch["cont"]).all() and torch.isfinite(batch["weight"]).all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXTS, min_size=2, max_size=12))
def test_any_text_becomes_ids_or_the_no_text_flag(texts, tiny_bert):
    frame = pd.DataFrame({"t": pd.Series(texts, dtype=object), "y": ["yes", "no"] * (len(texts) // 2) + ["yes"] *
                          (len(texts) % 2)})
    options = PreprocessingOptions(text_model=tiny_bert, max_length=16)
    pre = TabularPreprocessor(ColumnSpec(target="y", text=["t"]), options=options).fit(frame)
    out = pre.transform(frame)
    blank = [t is None or not str(t).strip() for t in texts]
    assert out["has_text"].tolist() == [not b for b in blank]
    assert (out["lengths"] <= 16).all() and (out["lengths"] >= 1).all()
