"""Builds ``data/adult_weak_text.parquet``: a small table whose text carries little signal.

Issue 11's case for "fusion must not hurt": a few thousand rows, a strong table, a weak text. It is
made from the shipped data, deterministically:

* 4,000 rows of adult (``sample(random_state=0)``), with its 14 columns and the target ``income``;
  ``split`` gives 3,000 training and 1,000 validation rows, stratified by income (seed 0).
* ``review``: a real clothing review (title and text) drawn for each row, from the reviews that
  recommend the item with probability 0.65 when the row earns >50K and 0.35 otherwise. The text
  says nothing about the person; only whether its review is positive leans, weakly, with income.
  A frozen MiniLM reads the sentiment well, so the text alone scores an AUROC near 0.6, against
  about 0.9 for the table.

    python benchmarks/weak_text_case.py   # rewrites data/adult_weak_text.parquet
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "adult_weak_text.parquet"
P_POSITIVE = {True: 0.65, False: 0.35}  # P(the drawn review recommends its item | income > 50K)


def build() -> pd.DataFrame:
    adult = pd.read_parquet(ROOT / "data" / "adult.parquet").sample(4000, random_state=0).reset_index(drop=True)
    reviews = pd.read_parquet(ROOT / "data" / "womens_clothing_reviews.parquet")
    reviews = reviews[reviews["Review Text"].notna()]
    text = (reviews["Title"].fillna("") + ". " + reviews["Review Text"]).str.lstrip(". ")
    pools = {flag: text[reviews["Recommended IND"] == flag].to_numpy() for flag in (0, 1)}
    rng = np.random.default_rng(0)
    rich = (adult["income"] == ">50K").to_numpy()
    positive = rng.uniform(size=len(adult)) < np.where(rich, P_POSITIVE[True], P_POSITIVE[False])
    adult["review"] = [pools[int(p)][rng.integers(len(pools[int(p)]))] for p in positive]
    split = np.full(len(adult), "train", dtype=object)
    for cls in (True, False):
        rows = rng.permutation(np.flatnonzero(rich == cls))
        split[rows[: round(len(rows) * 0.25)]] = "valid"
    adult["split"] = split
    return adult


if __name__ == "__main__":
    build().to_parquet(OUT, index=False)
    print(f"wrote {OUT}")
