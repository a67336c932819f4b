"""Builds a table mmtab has never seen, written the way spreadsheets and exports write tables, for
``mmtab init`` to read as a new user's: 6,000 clothing reviews as listings.

From the shipped reviews (seed 0): an ``listing_id`` unique per row; the review's ``Title`` and
``Review Text`` as two text columns; ``posted``, a date written as text (``2023-04-17``) drawn
uniformly over 2021-2024, with no bearing on the target; ``price``, written as text with a currency
sign and thousands separators (``$1,234.50``), drawn from a log-normal, with no bearing on the target
either; the buyer's age written with its unit (``34 yrs``); the feedback count; ``Clothing ID``;
the division, department and class; ``recommended`` as ``yes``/``no``; and ``Rating``, which leaks the
target. A ``split`` column marks 4,800 rows ``train`` and 1,200 ``valid``.

    python benchmarks/new_table_case.py --output listings.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "data" / "womens_clothing_reviews.parquet"
ROWS, TRAIN = 6000, 4800


def build() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    reviews = pd.read_parquet(SOURCE).sample(ROWS, random_state=0).reset_index(drop=True)
    days = rng.integers(0, 4 * 365, ROWS)
    posted = (pd.Timestamp("2021-01-01") + pd.to_timedelta(days, unit="D")).strftime("%Y-%m-%d")
    price = rng.lognormal(4.0, 1.0, ROWS)
    return pd.DataFrame({
        "listing_id": rng.permutation(ROWS) + 100_000,
        "posted": posted,
        "Title": reviews["Title"],
        "Review Text": reviews["Review Text"],
        "price": [f"${p:,.2f}" for p in price],
        "age": [f"{a} yrs" for a in reviews["Age"]],
        "Positive Feedback Count": reviews["Positive Feedback Count"],
        "Clothing ID": reviews["Clothing ID"],
        "Division Name": reviews["Division Name"],
        "Department Name": reviews["Department Name"],
        "Class Name": reviews["Class Name"],
        "Rating": reviews["Rating"],
        "recommended": np.where(reviews["Recommended IND"] == 1, "yes", "no"),
        "split": np.where(np.arange(ROWS) < TRAIN, "train", "valid"),
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="listings.csv", help="the CSV file to write")
    args = parser.parse_args()
    table = build()
    table.to_csv(args.output, index=False)
    print(f"wrote {args.output}: {len(table)} rows, {len(table.columns)} columns")
