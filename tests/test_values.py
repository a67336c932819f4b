"""Numbers written as text and dates: read the same way by the checks, the preprocessing and `mmtab init`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmtab import TabularTextDataModule
from mmtab.data.values import to_numbers, with_date_parts
from mmtab.errors import DataValidationError


def test_numbers_written_as_text_are_read_as_numbers_and_words_are_not():
    values = pd.Series(["1,234", "$12.50", "45%", "12 kg", "-3", " 7 ", None, "unknown", "1,23", "2.5e3"])
    read = to_numbers(values)
    expected = [1234.0, 12.5, 45.0, 12.0, -3.0, 7.0, np.nan, np.nan, np.nan, 2500.0]
    np.testing.assert_array_equal(read.to_numpy(), np.array(expected))
    assert to_numbers(pd.Series([1, 2, 3])).dtype == np.float64


def test_a_date_becomes_its_days_month_and_weekday():
    parts = with_date_parts(pd.DataFrame({"d": ["2024-03-01", "01/03/2024 14:00", None]}), ["d"])
    assert parts["d.days"].iloc[0] == 19783.0  # days from 1970-01-01 to 2024-03-01
    assert parts["d.month"].tolist()[:2] == ["Mar", "Jan"] and parts["d.weekday"].iloc[0] == "Fri"
    assert parts.iloc[2][["d.days", "d.month", "d.weekday"]].isna().all()


def frame(n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    when = pd.Timestamp("2022-01-01") + pd.to_timedelta(rng.integers(0, 700, n), unit="D")
    y = (when.month.to_numpy() > 6).astype(int)  # the season decides the target
    return pd.DataFrame({"posted": when.strftime("%Y-%m-%d"), "price": [f"${p:,.2f}" for p in rng.gamma(2, 900, n)],
                         "y": y})


def test_a_model_reads_dates_and_prices_written_as_text_and_predict_reads_them_again():
    dm = TabularTextDataModule.from_frame(frame(), target="y", continuous_cols=["price"], date_cols=["posted"],
                                          min_category_count=1, batch_size=64)
    pre = dm.preprocessor
    assert pre.continuous_names == ["price", "posted.days"] and len(pre.cardinalities) == 2  # month, weekday
    summary = pre.summary()
    assert "cat  posted.month: 12 levels" in summary and "numbers written as text" in summary
    table = dm.table("train")
    assert torch.isfinite(table.tensors["cont"]).all()
    again = pre.transform(frame(20).drop(columns="y"))
    month = pre.features.categorical.index("posted.month")
    assert (again["cat"][:, month] >= 2).all()  # every month a known level, none unknown or missing


def test_a_value_that_is_not_a_date_is_named():
    bad = frame(50)
    bad.loc[7, "posted"] = "soon"
    with pytest.raises(DataValidationError, match=r"column 'posted' in date_cols has values that are not dates "
                                                  r"\(row 7: 'soon'\)"):
        TabularTextDataModule.from_frame(bad, target="y", date_cols=["posted"]).preprocessor  # noqa: B018
