"""Which fusion keeps a weak text from hurting a strong table: issue 11's candidates, measured.

Each candidate is one set of CLI overrides on a shipped config, trained through the CLI and scored
at its best epoch (by val_loss) on the validation rows:

* weak_text: ``configs/small_table_text.yaml`` on ``data/adult_weak_text.parquet`` (3,000 training
  rows of adult beside a review whose sentiment leans weakly with income; see
  benchmarks/weak_text_case.py), 3 seeds, against the table alone (``configs/small_table.yaml``).
* reviews: ``configs/reviews_demo.yaml`` (frozen MiniLM, the reference split, 23k rows), the same
  seeds: a strong text on more rows, where a regulariser must not cost much.

The candidates (see mmtab/models/fusion.py):

* ``concat``: ConcatFusion, nothing else. With a linear head (weak_text's) this *is* late fusion of
  per-branch linear heads; ``late`` drops the reviews head's hidden layer to make it so there too.
* ``branch_dropout``: dropout 0.6 on each branch's normalised features.
* ``project``: the text projected to 16 units before the concatenation.
* ``project_wd``: the same, with weight decay 1.0 on the fusion part (which holds the projection):
  stronger decay on the text side; ``project_wd_dropout`` adds the branch dropout.
* ``gated`` / ``gate_to_table``: GatedFusion, its gates starting half open / tabular 0.88, text 0.12.

Prints one JSON line (means over seeds of accuracy, auroc, log_loss, fit_s per candidate and case)
and writes benchmarks/results/fusion_candidates.json.

    python benchmarks/fusion_candidates.py [--seeds 0 1 2] [--cases weak_text reviews] [--candidates ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd
from tabular_quality import fit_mmtab, mean_over_seeds, mmtab_scores

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "fusion_candidates.json"
FUSION = "--model.net.fusion="


def fusion(cls: str, *, decay: float = 1e-2, **init_args: object) -> list[str]:
    """The overrides of one candidate. Every argument a shipped config may set is given (jsonargparse
    merges new init_args and parts into the config's, so one left out would keep the config's
    value); `decay` is the fusion part's weight decay (default: both configs' module-wide 0.01)."""
    defaults = {"ConcatFusion": {"branch_dropout": 0.0, "project": {}},
                "GatedFusion": {"branch_dropout": 0.0, "gate_bias": {}}}[cls]
    return [FUSION + json.dumps({"class_path": f"mmtab.{cls}", "init_args": {**defaults, **init_args}}),
            f"--model.parts.fusion.weight_decay={decay}"]


CANDIDATES: dict[str, list[str]] = {
    "concat": fusion("ConcatFusion"),
    "late": [*fusion("ConcatFusion"), "--model.net.head_layers=[]"],
    "branch_dropout": fusion("ConcatFusion", branch_dropout=0.6),
    "project": fusion("ConcatFusion", project={"text": 16}),
    "project_wd": fusion("ConcatFusion", project={"text": 16}, decay=1.0),
    "project_wd_dropout": fusion("ConcatFusion", project={"text": 16}, decay=1.0, branch_dropout=0.6),
    "gated": fusion("GatedFusion"),
    "gate_to_table": fusion("GatedFusion", gate_bias={"tabular": 2.0, "text": -2.0}),
}
# case: (data, target, positive class, the fused config, the table-alone config or None)
CASES = {
    "weak_text": (ROOT / "data" / "adult_weak_text.parquet", "income", ">50K", "small_table_text.yaml",
                  "small_table.yaml"),
    "reviews": (ROOT / "data" / "womens_clothing_reviews.parquet", "Recommended IND", 1, "reviews_demo.yaml", None),
}


def case_data(name: str, tmp: Path) -> tuple[Path, pd.DataFrame]:
    """The file to train on (with a ``split`` column) and its validation rows."""
    path, target, *_ = CASES[name]
    df = pd.read_parquet(path)
    if "split" not in df:  # the reviews: the reference split (benchmarks/reviews.py)
        from reviews import reference_split

        df = df.assign(split=reference_split(df))
        path = tmp / f"{name}.parquet"
        df.to_parquet(path)
    return path, df[df["split"] == "valid"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in args.cases:
            data, valid = case_data(case, tmp)
            _, target, positive, fused, alone = CASES[case]
            runs = {("table_alone", alone)} if alone else set()
            runs |= {(c, fused) for c in args.candidates if not (c == "late" and case == "weak_text")}
            for name, config in sorted(runs):
                scores = []
                for seed in args.seeds:
                    extra = [] if name == "table_alone" else CANDIDATES[name]
                    fit_s, best = fit_mmtab(ROOT / "configs" / config, data, seed, tmp / f"{case}_{name}_{seed}",
                                            *extra)
                    scores.append({**mmtab_scores(best, valid, target, positive), "fit_s": fit_s})
                    print(f"{case} {name} seed {seed}: {scores[-1]}", flush=True)
                results.setdefault(case, {})[name] = {**mean_over_seeds(scores), "seeds": args.seeds}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
