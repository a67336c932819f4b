import pandas as pd
import pytest

from mmtab import ColumnSpec, DataValidationError
from mmtab.tasks import infer_task


def problems_of(spec: ColumnSpec, df: pd.DataFrame, **kwargs) -> str:
    with pytest.raises(DataValidationError) as err:
        spec.validate(df, where="test", **kwargs)
    return str(err.value)


def test_every_problem_is_reported_at_once_with_rows():
    df = pd.DataFrame({"Age": [30, "old", 40, "n/a"], "y": [1, None, 0, 1], "w": [1.0, -2.0, 1.0, 1.0]})
    msg = problems_of(ColumnSpec("y", continuous=["Age", "Price"], weight="w"), df)
    assert "4 problem(s)" in msg
    assert "column 'Price' is not in the table" in msg
    assert "'Age' in continuous_cols has non-numeric values (row 1: 'old', row 3: 'n/a')" in msg
    assert "list it under categorical_cols" in msg
    assert "target column 'y' has missing values (first rows: 1)" in msg
    assert "weight column 'w' has negative values (first rows: 1)" in msg


def test_missing_column_suggests_the_closest_name():
    msg = problems_of(ColumnSpec("y", categorical=["Departmnet"]), pd.DataFrame({"Department": ["a"], "y": [1]}))
    assert "did you mean 'Department'" in msg


def test_nan_weight_empty_table_and_double_roles():
    df = pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1], "w": [1.0, float("nan")]})
    msg = problems_of(ColumnSpec("y", continuous=["a"], categorical=["a"], weight="w"), df)
    assert "weight column 'w' has missing or infinite values (first rows: 1)" in msg
    assert "column 'a' is listed in both categorical_cols and continuous_cols" in msg
    assert "the table has no rows" in problems_of(ColumnSpec("y", continuous=["a"]), df.iloc[:0])


def test_unlabelled_rows_need_only_features():
    ColumnSpec("y", continuous=["a"], weight="w").validate(pd.DataFrame({"a": [1.0]}), where="t", labelled=False)


def test_infer_task():
    assert infer_task(pd.Series(["<=50K", ">50K", "<=50K"])) == "binary"
    assert infer_task(pd.Series([0.5, 1.25, 3.0])) == "regression"
    assert infer_task(pd.Series(["a", "b", "c"])) == "multiclass"
