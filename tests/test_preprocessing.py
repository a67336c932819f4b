import numpy as np
import pandas as pd
import pytest
import torch

from mmtab import ColumnSpec, DataValidationError, PreprocessingOptions, TabularPreprocessor
from mmtab.data.preprocessing import MISSING, UNKNOWN


def fitted(messy: pd.DataFrame, **kwargs) -> TabularPreprocessor:
    spec = ColumnSpec("y", categorical=["colour"], continuous=["x", "size"], weight="w")
    return TabularPreprocessor(spec, options=PreprocessingOptions(**{"min_category_count": 5, **kwargs})).fit(messy)


def test_statistics_come_from_the_rows_fitted_on(messy):
    pre = fitted(messy.iloc[:300])
    x = messy["x"].iloc[:300]
    assert pre.fill_values["x"] == pytest.approx(x.median())
    filled = x.fillna(x.median())
    assert pre.scalings[0].params[0] == pytest.approx(filled.mean())
    assert pre.scalings[0].params[1] == pytest.approx(filled.std(ddof=0))
    assert pre.continuous_names == ["x", "size", "x_na"]  # a flag only where training had missing values


def test_unknown_missing_and_rare_codes(messy):
    pre = fitted(messy)
    vocab = pre.vocabs["colour"]
    assert vocab.levels == ["blue", "green", "red"] and vocab.n_pooled_rows == 3  # 'violet' pooled
    rows = pd.DataFrame({"colour": ["red", "violet", "purple", None], "x": [0.0, np.nan, 1.0, 2.0],
                         "size": [1.0, 2.0, 3.0, 4.0]})
    out = pre.transform(rows)
    assert out["cat"][:, 0].tolist() == [2 + 2, UNKNOWN, UNKNOWN, MISSING]
    assert "target" not in out  # unlabelled rows
    na_flag = out["cont"][:, 2]
    assert na_flag[1] > na_flag[0]  # the missing x is flagged
    assert torch.isfinite(out["cont"]).all()


def test_missing_goes_to_unknown_when_training_had_none(messy):
    pre = fitted(messy.dropna(subset=["colour"]))
    out = pre.transform(pd.DataFrame({"colour": [None], "x": [0.0], "size": [1.0]}))
    assert out["cat"].item() == UNKNOWN


def test_user_frame_is_not_modified(messy):
    before = messy.copy()
    fitted(messy).transform(messy)
    pd.testing.assert_frame_equal(messy, before)


def test_state_dict_round_trip_gives_identical_tensors(messy):
    pre = fitted(messy)
    again = TabularPreprocessor.from_state_dict(pre.state_dict())
    a, b = pre.transform(messy), again.transform(messy)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_target_values_unseen_in_training_are_an_error(messy):
    pre = fitted(messy)
    bad = messy.assign(y=messy["y"].where(messy.index != 7, 5))
    with pytest.raises(DataValidationError, match="values not seen in the training rows"):
        pre.transform(bad)


def test_summary_names_every_column(messy):
    text = fitted(messy).summary()
    for name in ("colour", "x", "size", "x_na", "3 rare rows pooled"):
        assert name in text


@pytest.mark.parametrize("transform", ["none", "log1p"])
def test_the_target_scaling_is_saved_and_restored_exactly(transform):
    frame = pd.DataFrame({"x": np.arange(50.0), "price": np.linspace(10, 900, 50) ** 1.3})
    pre = TabularPreprocessor(ColumnSpec("price", continuous=["x"]), task="regression",
                              options=PreprocessingOptions(target_transform=transform)).fit(frame)
    loaded = TabularPreprocessor.from_state_dict(pre.state_dict())
    assert loaded.target_scaling == pre.target_scaling and pre.target_scaling.log1p == (transform == "log1p")
    z = pre.transform(frame)["target"]
    assert torch.equal(z, loaded.transform(frame)["target"]) and abs(float(z.mean())) < 1e-5
    torch.testing.assert_close(pre.target_scaling.decode(z), torch.tensor(frame["price"].to_numpy(np.float32)),
                               rtol=1e-4, atol=1e-3)


def test_log1p_refuses_targets_it_cannot_take():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0.5, -2.0, 3.25]})
    with pytest.raises(DataValidationError, match="values <= -1"):
        TabularPreprocessor(ColumnSpec("y", continuous=["x"]), task="regression",
                            options=PreprocessingOptions(target_transform="log1p")).fit(frame)


def test_a_parquet_table_s_categories_read_as_a_dictionary_encode_as_the_strings_do(adult, tmp_path):
    """The data module reads a Parquet file's categorical text columns dictionary-encoded (a byte a
    row); the codes, the vocabulary and a number used as a category are exactly those of plain text."""
    from mmtab.data.tables import read_table

    from .conftest import ADULT_CAT, ADULT_CONT

    frame = adult.sample(3000, random_state=0).reset_index(drop=True)
    frame.loc[:40, "workclass"] = None
    frame["hours"] = frame["hours-per-week"]  # a number as a category: its text, "40", is the level
    frame.to_parquet(tmp_path / "t.parquet")
    dictionary = read_table(tmp_path / "t.parquet", categorical=[*ADULT_CAT, "hours"])
    assert dictionary["workclass"].dtype == "category" and dictionary["hours"].dtype == frame["hours"].dtype
    spec = ColumnSpec("income", [*ADULT_CAT, "hours"], ADULT_CONT)
    plain = TabularPreprocessor(spec, options=PreprocessingOptions(min_category_count=5)).fit(frame)
    encoded = TabularPreprocessor(spec, options=PreprocessingOptions(min_category_count=5)).fit(dictionary)
    assert plain.vocabs == encoded.vocabs
    assert torch.equal(plain.transform(frame)["cat"], encoded.transform(dictionary)["cat"])
    assert torch.equal(plain.transform(frame)["cat"], plain.transform(dictionary)["cat"])
    assert (plain.transform(frame)["cat"][:41, 0] == MISSING).all()
