"""Builds data/california_small.parquet: a small regression table for configs/small_table_regression.yaml
and the ``california_small`` case of benchmarks/tabular_quality.py.

4,000 rows drawn at random (seed 0) from the shipped California housing table, 3,000 marked ``train``
and 1,000 ``valid`` in the ``split`` column: the size of table the small-table recipes are for. Its
target, ``MedHouseVal`` (median house value in $100,000s), is positive and skewed, with a cap at 5.0
where the census stopped counting: the case for the docs' advice on ``log1p``.

    python benchmarks/small_regression_case.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data" / "california_housing.parquet"
OUT = ROOT / "data" / "california_small.parquet"
ROWS, TRAIN = 4000, 3000


def build() -> pd.DataFrame:
    frame = pd.read_parquet(SOURCE).sample(ROWS, random_state=0).reset_index(drop=True)
    return frame.assign(split=np.where(np.arange(ROWS) < TRAIN, "train", "valid"))


if __name__ == "__main__":
    table = build()
    table.to_parquet(OUT, index=False)
    print(f"wrote {OUT}: {len(table)} rows, {table['split'].value_counts().to_dict()}")
