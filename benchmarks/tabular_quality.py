"""mmtab's shipped tabular recipes against scikit-learn's HistGradientBoosting (default settings),
trained in the same script on the same rows, 3 seeds each, plus the weak-text fusion case.

* adult (configs/adult_tabm.yaml): the reference split (stratified 80/20, random_state=42); the 20%
  are the test rows. mmtab picks its best epoch on 10% of the training rows (stratified, by seed)
  and is scored with it; HistGradientBoosting's default early stopping also holds out 10% of its
  training rows.
* california housing (configs/california_housing.yaml): the same kind of split (80/20,
  random_state=42), the same inner 10%.
* california_small: ``data/california_small.parquet`` (benchmarks/small_regression_case.py; 4,000
  rows), its 1,000 ``valid`` rows held out as the test rows; the small-table regression recipe
  (configs/small_table_regression.yaml) picks its best epoch on 10% of the 3,000 training rows (by
  seed), with the target as it is (``mmtab``) and through ``log1p`` (``mmtab_log1p``); each with
  ``min_prediction``, its lowest prediction on the test rows.
* weak_text: ``data/adult_weak_text.parquet`` (see benchmarks/weak_text_case.py): 3,000 training
  rows, 1,000 validation rows, a text with little signal. The tabular recipe
  (configs/small_table.yaml) against the same recipe with a frozen MiniLM fused
  (configs/small_table_text.yaml), each scored at its best epoch on the validation rows.

Prints one JSON line and writes benchmarks/results/tabular_quality.json:
``{"adult": {"mmtab": {...}, "hgb": {...}}, "california": {...}, "california_small": {"mmtab": {...},
"mmtab_log1p": {...}, "hgb": {...}}, "weak_text": {"tabular": {...}, "fusion": {...}}}``, each ``{...}``
the means over seeds of ``accuracy``, ``auroc``, ``log_loss`` (or ``rmse``, ``mae``, ``r2``) and ``fit_s``.

    python benchmarks/tabular_quality.py [--seeds 0 1 2] [--only adult california california_small weak_text]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from fastai_parity import build_cli, score
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split

from mmtab.predict import predict_frame
from mmtab.training.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "tabular_quality.json"
CASES = {  # name: (data file, target, positive class or None for regression, mmtab config)
    "adult": (ROOT / "data" / "adult.parquet", "income", ">50K", ROOT / "configs" / "adult_tabm.yaml"),
    "california": (ROOT / "data" / "california_housing.parquet", "MedHouseVal", None,
                   ROOT / "configs" / "california_housing.yaml"),
}


def classification_scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {**score(y, p), "log_loss": log_loss(y, p)}


def regression_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"rmse": mean_squared_error(y, pred) ** 0.5, "mae": mean_absolute_error(y, pred), "r2": r2_score(y, pred)}


def splits(df: pd.DataFrame, target: str, classification: bool, seed: int) -> np.ndarray:
    """train / valid / test per row: test is the reference 20%; valid is 10% of the rest, by seed."""
    strat = df[target] if classification else None
    rest, test = train_test_split(np.arange(len(df)), test_size=0.2, random_state=42, stratify=strat)
    train, valid = train_test_split(rest, test_size=0.1, random_state=seed,
                                    stratify=None if strat is None else strat.iloc[rest])
    split = np.full(len(df), "train", dtype=object)
    split[valid], split[test] = "valid", "test"
    return split


def fit_mmtab(config: Path, data: Path, seed: int, workdir: Path, *extra: str) -> tuple[float, Path]:
    """`mmtab fit` of a shipped config (its early stopping and checkpoints included) on `data`, whose
    ``split`` column chooses the rows; the fit's seconds and its best checkpoint."""
    cli = build_cli(config, f"--data.path={data}", "--data.split_col=split", f"--seed_everything={seed}",
                    f"--data.seed={seed}", f"--trainer.default_root_dir={workdir}", *extra, own_callbacks=True)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    return time.perf_counter() - start, Path(cli.trainer.checkpoint_callback.best_model_path)


def mmtab_scores(ckpt: Path, rows: pd.DataFrame, target: str, positive: str | None) -> dict[str, float]:
    module, pre = load_checkpoint(ckpt)
    table = predict_frame(module, pre, rows)
    if positive is None:
        pred = table["prediction"].to_numpy()
        return {**regression_scores(rows[target].to_numpy(), pred), "min_prediction": float(pred.min())}
    return classification_scores((rows[target] == positive).to_numpy(), table[f"prob_{positive}"].to_numpy())


def hgb_run(df: pd.DataFrame, split: np.ndarray, target: str, positive: str | None, seed: int) -> dict[str, float]:
    X = df.drop(columns=[target]).copy()
    for col in X.columns:
        if not pd.api.types.is_numeric_dtype(X[col]):
            X[col] = X[col].astype(str).astype("category")  # HGB's native categorical splits
    fit_rows = split != "test"  # HGB holds out its own 10% for early stopping
    test = split == "test"
    model = (HistGradientBoostingRegressor if positive is None else HistGradientBoostingClassifier)(
        random_state=seed, categorical_features="from_dtype")
    y = df[target] if positive is None else (df[target] == positive).astype(int)
    start = time.perf_counter()
    model.fit(X[fit_rows], y[fit_rows])
    fit_s = time.perf_counter() - start
    if positive is None:
        return {**regression_scores(y[test].to_numpy(), model.predict(X[test])), "fit_s": fit_s}
    return {**classification_scores(y[test].to_numpy(), model.predict_proba(X[test])[:, 1]), "fit_s": fit_s}


def mean_over_seeds(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}


def run_case(name: str, seeds: list[int], tmp: Path) -> dict[str, dict[str, float]]:
    path, target, positive, config = CASES[name]
    df = pd.read_parquet(path)
    runs: dict[str, list[dict[str, float]]] = {"mmtab": [], "hgb": []}
    for seed in seeds:
        split = splits(df, target, positive is not None, seed)
        data = tmp / f"{name}_{seed}.parquet"
        df.assign(split=split).to_parquet(data)
        fit_s, best = fit_mmtab(config, data, seed, tmp / f"{name}_{seed}")
        runs["mmtab"].append({**mmtab_scores(best, df[split == "test"], target, positive), "fit_s": fit_s})
        runs["hgb"].append(hgb_run(df, split, target, positive, seed))
        print(f"{name} seed {seed}: mmtab {runs['mmtab'][-1]}  hgb {runs['hgb'][-1]}", flush=True)
    return {k: mean_over_seeds(v) for k, v in runs.items()}


def run_small_regression(seeds: list[int], tmp: Path) -> dict[str, dict[str, float]]:
    frame = pd.read_parquet(ROOT / "data" / "california_small.parquet")
    target, config = "MedHouseVal", ROOT / "configs" / "small_table_regression.yaml"
    df = frame.drop(columns="split")
    runs: dict[str, list[dict[str, float]]] = {"mmtab": [], "mmtab_log1p": [], "hgb": []}
    for seed in seeds:
        _, inner = train_test_split(np.flatnonzero(frame["split"] == "train"), test_size=0.1, random_state=seed)
        split = np.where(frame["split"] == "valid", "test", "train").astype(object)
        split[inner] = "valid"
        data = tmp / f"california_small_{seed}.parquet"
        df.assign(split=split).to_parquet(data)
        for kind, extra in (("mmtab", ()), ("mmtab_log1p", ("--data.target_transform=log1p",))):
            fit_s, best = fit_mmtab(config, data, seed, tmp / f"california_small_{kind}_{seed}", *extra)
            runs[kind].append({**mmtab_scores(best, df[split == "test"], target, None), "fit_s": fit_s})
        runs["hgb"].append(hgb_run(df, split, target, None, seed))
        print(f"california_small seed {seed}: " + "  ".join(f"{k} {v[-1]}" for k, v in runs.items()), flush=True)
    return {k: mean_over_seeds(v) for k, v in runs.items()}


def run_weak_text(seeds: list[int], tmp: Path) -> dict[str, dict[str, float]]:
    data = ROOT / "data" / "adult_weak_text.parquet"
    valid = pd.read_parquet(data).query("split == 'valid'")
    runs: dict[str, list[dict[str, float]]] = {"tabular": [], "fusion": []}
    for seed in seeds:
        for kind, config in (("tabular", "small_table.yaml"), ("fusion", "small_table_text.yaml")):
            fit_s, best = fit_mmtab(ROOT / "configs" / config, data, seed, tmp / f"weak_{kind}_{seed}")
            runs[kind].append({**mmtab_scores(best, valid, "income", ">50K"), "fit_s": fit_s})
        print(f"weak_text seed {seed}: tabular {runs['tabular'][-1]}  fusion {runs['fusion'][-1]}", flush=True)
    return {k: mean_over_seeds(v) for k, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    cases = ["adult", "california", "california_small", "weak_text"]
    parser.add_argument("--only", nargs="+", choices=cases, default=cases)
    args = parser.parse_args()
    pl.seed_everything(0, verbose=False)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only:
            if name == "weak_text":
                results[name] = run_weak_text(args.seeds, Path(tmp))
            elif name == "california_small":
                results[name] = run_small_regression(args.seeds, Path(tmp))
            else:
                results[name] = run_case(name, args.seeds, Path(tmp))
    results["seeds"] = args.seeds
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
