"""Frozen against target-aware text vectors (issue 20), into mmtab's tabular recipes and into
scikit-learn's HistGradientBoosting on the same vectors.

Cases (each scored on its validation rows, the epoch chosen by val_loss on them as the shipped
recipes do):

* ``weak_text``: data/adult_weak_text.parquet (3,000 training rows of adult beside a review whose
  sentiment leans weakly with income; benchmarks/weak_text_case.py), target income.
* ``reviews``: the clothing reviews on the reference split (benchmarks/reviews.py), target
  Recommended IND: a text that carries the target, on 18,788 training rows.
* ``rating``: the same rows, target the 1-5 Rating as ordered classes (quadratic weighted kappa).
* ``rating_small``: a small table whose numeric target the text carries: 4,000 reviews drawn at
  random (seed 0; 3,000 to train, 1,000 to validate), target the Rating read as a number
  (``data.task: regression``; r2, rmse, mae), in the small-table recipes (configs/small_table_regression.yaml
  for the table alone, configs/small_table_tar.yaml and configs/small_table_text_choice.yaml with the
  reviews' columns).

Variants:

* ``tabular``: the table alone (configs/small_table.yaml; configs/reviews_tabular.yaml).
* ``frozen``: the TAR config with no adapters: the frozen MiniLM's vectors, L2-normalised and
  reduced to 30 principal components, beside the table.
* ``tar``: configs/small_table_tar.yaml / configs/reviews_tar.yaml: the adapters fitted on the
  target first (one ``mmtab fit``), then the same model on their reduced vectors.
* ``tar_crossfit``: ``tar`` with ``model.target_aware.crossfit: 3``.
* ``tar_into_tabular``: ``tar`` with the text's vectors as inputs of the tabular branch
  (``model.net.text_into: tabular``), an 8-member ensemble (``ensemble_size: 8``), instead of beside
  its output in the head.
* ``tar_loss`` (a numeric target only): ``tar`` with ``model.target_aware.regression: loss`` (the
  adapters fit the value on squared error) instead of the default ``binned`` (its quantile bins as
  ordered classes).
* ``default``: the case's shipped recipe (configs/small_table_text_choice.yaml, which chooses between
  the table alone, frozen and target-aware text on rows held out from the training rows: its
  ``choices`` are what each seed chose; configs/reviews_demo.yaml; configs/reviews_rating.yaml).
* ``hgb_frozen`` / ``hgb_tar``: HistGradientBoosting (default settings) on the table's columns and
  the 30 components that ``mmtab embed`` writes from the ``frozen`` / ``tar`` checkpoint (for ``tar``
  the cross-fitted training vectors where the fit cross-fitted).

Each variant's metrics are means over the seeds (``auroc``, ``accuracy``, ``log_loss``; ``qwk``,
``accuracy``, ``log_loss`` for the rating) with ``fit_s``, the seconds of its fit (the adapter fits
included). Also reported: ``reviews_tar_s`` (the first seed's ``tar`` fit on the reviews) and, with
``--reference``, ``reviews_text_then_fusion_s``: configs/reviews_text.yaml then
configs/reviews_fusion_from_text.yaml, timed in this run.

Every run starts from an empty text-embedding cache of its own (in its temporary folder), so each
``fit_s`` includes encoding the texts its fit needs that no earlier fit *of this run* encoded: a
``tar`` fit encodes every row with its adapters, a ``frozen`` fit of the second seed reads what the
first wrote (as a user's second fit does).

Prints one JSON line and writes benchmarks/results/text_embeddings.json (merged into what is there,
so cases can be run one at a time: each entry keeps the seeds and precision it was measured with).

    python benchmarks/text_embeddings.py [--cases weak_text reviews rating rating_small] [--seeds 0 1 2]
        [--variants tabular frozen tar tar_crossfit tar_into_tabular tar_loss default hgb_frozen hgb_tar]
        [--precision bf16-mixed] [--reference]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from fusion_candidates import case_data
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import accuracy_score, cohen_kappa_score, log_loss, roc_auc_score
from tabular_quality import fit_mmtab, mean_over_seeds, regression_scores

from mmtab.cli import MmtabCLI
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.predict import predict_frame
from mmtab.training.checkpoints import load_checkpoint
from mmtab.training.module import MultimodalModule

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "text_embeddings.json"
CONFIGS = ROOT / "configs"
VARIANTS = ["tabular", "frozen", "tar", "tar_crossfit", "tar_into_tabular", "tar_loss", "default", "hgb_frozen",
            "hgb_tar"]
NUMERIC_ONLY = ("tar_loss",)
# the text's vectors as inputs of the tabular branch, an 8-member ensemble, instead of beside it in the head
INTO_TABULAR = ["--model.net.text_into=tabular", "--model.net.tabular.ensemble_size=8"]
RATING = ["--data.target=Rating", "--data.task=ordinal"]
NUMBER = "a number"  # the "positive class" of a numeric target
# the small-table recipes (written for adult) on the reviews' columns, the Rating read as a number
REVIEW_CATEGORIES = ["Division Name", "Department Name", "Class Name", "Clothing ID"]
SMALL_RATING = ["--data.target=Rating", "--data.task=regression",
                f"--data.categorical_cols={json.dumps(REVIEW_CATEGORIES)}",
                f"--data.continuous_cols={json.dumps(['Age', 'Positive Feedback Count'])}"]
SMALL_RATING_TEXT = [*SMALL_RATING, f"--data.text_cols={json.dumps(['Title', 'Review Text'])}", "--data.join_text=true",
                     "--data.max_length=256"]
# case: (the data case, target, positive class (None: the ordered rating; NUMBER: a numeric target), the
# table-alone config and its overrides, the TAR config and its overrides, the shipped recipe and its overrides)
CASES = {
    "weak_text": ("weak_text", "income", ">50K", ("small_table.yaml", []), ("small_table_tar.yaml", []),
                  ("small_table_text_choice.yaml", [])),
    "reviews": ("reviews", "Recommended IND", 1, ("reviews_tabular.yaml", []), ("reviews_tar.yaml", []),
                ("reviews_demo.yaml", [])),
    "rating": ("reviews", "Rating", None, ("reviews_tabular.yaml", RATING), ("reviews_tar.yaml", RATING),
               ("reviews_rating.yaml", [])),
    "rating_small": ("rating_small", "Rating", NUMBER, ("small_table_regression.yaml", SMALL_RATING),
                     ("small_table_tar.yaml", SMALL_RATING_TEXT), ("small_table_text_choice.yaml", SMALL_RATING_TEXT)),
}


def rating_small(tmp: Path) -> tuple[Path, pd.DataFrame]:
    """4,000 reviews drawn at random (seed 0), 3,000 marked ``train`` and 1,000 ``valid``."""
    reviews = pd.read_parquet(ROOT / "data" / "womens_clothing_reviews.parquet").sample(4000, random_state=0)
    df = reviews.reset_index(drop=True).assign(split=np.where(np.arange(4000) < 3000, "train", "valid"))
    path = tmp / "rating_small.parquet"
    df.to_parquet(path)
    return path, df[df["split"] == "valid"]


def without_adapters(config: str, tmp: Path) -> str:
    """The TAR config with no adapters and no adapter fit: the frozen encoder, reduced the same way. (A
    nested ``--model.net.text.lora=null`` override does not parse in jsonargparse, so a copy of the file.)"""
    recipe = yaml.safe_load((CONFIGS / config).read_text())
    recipe["model"].pop("target_aware")
    recipe["model"]["net"]["text"].pop("lora")
    out = tmp / f"frozen_{config}"
    out.write_text(yaml.safe_dump(recipe))
    return str(out)


def scores(table: pd.DataFrame, rows: pd.DataFrame, target: str, positive: object) -> dict[str, float]:
    """The predictions table of `rows` -> the case's metrics."""
    y = rows[target].to_numpy()
    if positive is NUMBER:
        return regression_scores(y.astype(float), table["prediction"].to_numpy(dtype=float))
    probs = table.filter(like="prob_")
    classes = [c[len("prob_"):] for c in probs.columns]
    p = probs.to_numpy()
    p = p / p.sum(axis=1, keepdims=True)
    if positive is not None:
        yes = (y == positive).astype(int)
        p1 = table[f"prob_{positive}"].to_numpy()
        return {"auroc": float(roc_auc_score(yes, p1)), "accuracy": float(accuracy_score(yes, p1 > 0.5)),
                "log_loss": float(log_loss(yes, p1))}
    labels = np.array([int(float(c)) for c in classes])
    # mmtab's ordinal prediction (the median class) where it wrote one; else the likeliest class
    predicted = table["prediction"].astype(float).to_numpy() if "prediction" in table else labels[p.argmax(axis=1)]
    return {"qwk": float(cohen_kappa_score(y, predicted.astype(int), weights="quadratic")),
            "accuracy": float(accuracy_score(y, predicted.astype(int))),
            "log_loss": float(log_loss(y, p, labels=labels))}


def cache(tmp: Path) -> str:
    """The run's own text-embedding cache: empty when the run starts, never the user's."""
    return f"--model.text_embeddings.cache_dir={tmp / 'embedding_cache'}"


def mmtab_run(config: str, extra: list[str], data: Path, valid: pd.DataFrame, target: str, positive: object,
              seed: int, work: Path, precision: str) -> tuple[dict[str, float], Path]:
    fit_s, best = fit_mmtab(CONFIGS / config, data, seed, work, f"--trainer.precision={precision}", *extra)
    module, pre = load_checkpoint(best)
    result = {**scores(predict_frame(module, pre, valid), valid, target, positive), "fit_s": fit_s}
    if module.text_choice_report is not None:
        result["choice"] = module.text_choice_report["choice"]
    return result, best


def exported(best: Path, config: str, extra: list[str], data: Path, seed: int, work: Path) -> pd.DataFrame:
    """`mmtab embed` of a checkpoint: each row's 30 components, with its split and row label."""
    out = work / "vectors.parquet"
    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=False,
                   save_config_callback=None, args=[
                       "--config", str(CONFIGS / config), f"--data.path={data}", "--data.split_col=split",
                       f"--data.seed={seed}", "--trainer.logger=false", *extra])
    cli.trainer.embed(cli.model, cli.datamodule, ckpt_path=str(best), output=str(out), dim=30, overwrite=True)
    return pd.read_parquet(out)


def hgb_on_vectors(df: pd.DataFrame, vectors: pd.DataFrame, target: str, positive: object, table_cols: list[str],
                   seed: int) -> dict[str, float]:
    """HistGradientBoosting on the table's columns and the text's components; fitted on the training rows
    (it holds out 10% of them to stop), scored on the validation rows."""
    pcs = [c for c in vectors.columns if "_pc" in c]
    joined = vectors.set_index("row")[["split", *pcs]].join(df[[*table_cols, target]])
    X = joined[[*table_cols, *pcs]].copy()
    for col in table_cols:
        if not pd.api.types.is_numeric_dtype(X[col]):
            X[col] = X[col].astype(str).astype("category")
    y = joined[target]
    train, valid = joined["split"] == "train", joined["split"] == "valid"
    start = time.perf_counter()
    if positive is NUMBER:
        regressor = HistGradientBoostingRegressor(random_state=seed, categorical_features="from_dtype")
        table = pd.DataFrame({"prediction": regressor.fit(X[train], y[train]).predict(X[valid])})
        return {**scores(table, joined[valid], target, positive), "fit_s": time.perf_counter() - start}
    model = HistGradientBoostingClassifier(random_state=seed, categorical_features="from_dtype")
    model.fit(X[train], y[train] if positive is None else (y[train] == positive).astype(int))
    fit_s = time.perf_counter() - start
    p = model.predict_proba(X[valid])
    classes = list(model.classes_)
    table = pd.DataFrame(p, columns=[f"prob_{c}" for c in classes])
    if positive is not None:
        table[f"prob_{positive}"] = p[:, classes.index(1)]
    return {**scores(table, joined[valid], target, positive), "fit_s": fit_s}


def run_case(name: str, seeds: list[int], variants: list[str], precision: str, tmp: Path) -> dict:
    case, target, positive, tabular, tar, default = CASES[name]
    data, valid = rating_small(tmp) if case == "rating_small" else case_data(case, tmp)
    df = pd.read_parquet(data)
    if positive is not NUMBER:
        variants = [v for v in variants if v not in NUMERIC_ONLY]
    spec = TabularTextDataModule  # the table's columns, as the TAR config names them
    cli = MmtabCLI(MultimodalModule, spec, subclass_mode_model=True, run=False, save_config_callback=None,
                   args=["--config", str(CONFIGS / tar[0]), f"--data.path={data}", "--data.split_col=split",
                         "--trainer.logger=false", *tar[1]])
    table_cols = [*cli.datamodule.spec.categorical, *cli.datamodule.spec.continuous]
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for seed in seeds:
        work = tmp / f"{name}_{seed}"
        best: dict[str, Path] = {}
        frozen = without_adapters(tar[0], tmp)
        plan = {"tabular": tabular, "frozen": (frozen, tar[1]), "tar": tar,
                "tar_crossfit": (tar[0], [*tar[1], "--model.target_aware.crossfit=3"]),
                "tar_into_tabular": (tar[0], [*tar[1], *INTO_TABULAR]),
                "tar_loss": (tar[0], [*tar[1], "--model.target_aware.regression=loss"]), "default": default}
        plan = {variant: (config, [*extra, cache(tmp)]) for variant, (config, extra) in plan.items()}
        for variant, (config, extra) in plan.items():
            needed = variant in variants or (variant in ("frozen", "tar") and f"hgb_{variant}" in variants)
            if not needed:
                continue
            result, best[variant] = mmtab_run(config, extra, data, valid, target, positive, seed, work / variant,
                                              precision)
            if variant in variants:
                runs[variant].append(result)
            print(f"{name} seed {seed} {variant}: {result}", flush=True)
        for kind in ("frozen", "tar"):
            if f"hgb_{kind}" in variants:
                config = without_adapters(tar[0], tmp) if kind == "frozen" else tar[0]
                vectors = exported(best[kind], config, [*tar[1], cache(tmp)], data, seed, work / kind)
                result = hgb_on_vectors(df, vectors, target, positive, table_cols, seed)
                runs[f"hgb_{kind}"].append(result)
                print(f"{name} seed {seed} hgb_{kind}: {result}", flush=True)
    summary = {}
    for variant, measured in runs.items():
        if not measured:
            continue
        choices = [r.pop("choice") for r in measured if "choice" in r]
        summary[variant] = {**mean_over_seeds(measured), "seeds": seeds, "precision": precision,
                            **({"choices": choices} if choices else {})}
    return summary


def reference_configs(tmp: Path) -> tuple[Path, Path]:
    """configs/reviews_text.yaml writing its checkpoints under `tmp` (the config names runs/reviews_text/, and a
    list item's argument cannot be set from the command line), and that folder."""
    recipe = yaml.safe_load((CONFIGS / "reviews_text.yaml").read_text())
    checkpoints = tmp / "reference_text" / "checkpoints"
    (saving,) = [c for c in recipe["trainer"]["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    saving["init_args"]["dirpath"] = str(checkpoints)
    out = tmp / "reference_reviews_text.yaml"
    out.write_text(yaml.safe_dump(recipe))
    return out, checkpoints


def reference_seconds(precision: str, tmp: Path) -> float:
    """configs/reviews_text.yaml then configs/reviews_fusion_from_text.yaml on the reference split."""
    data, _ = case_data("reviews", tmp)
    text_config, text_checkpoints = reference_configs(tmp)
    start = time.perf_counter()
    fit_mmtab(text_config, data, 42, tmp / "reference_text", f"--trainer.precision={precision}", cache(tmp))
    fit_mmtab(CONFIGS / "reviews_fusion_from_text.yaml", data, 42, tmp / "reference_fusion",
              f"--trainer.precision={precision}", f"--model.init_args.init_from={text_checkpoints / 'last.ckpt'}",
              cache(tmp))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["weak_text", "reviews", "rating"], choices=list(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--reference", action="store_true", help="time reviews_text.yaml + reviews_fusion_from_text")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            measured = run_case(name, args.seeds, args.variants, args.precision, Path(tmp))
            results[name] = {**results.get(name, {}), **measured}
            if name == "reviews" and "tar" in measured:
                results["reviews_tar_s"] = measured["tar"]["fit_s"]
        if args.reference:
            results["reviews_text_then_fusion_s"] = round(reference_seconds(args.precision, Path(tmp)), 1)
    lora = ROOT / "benchmarks" / "results" / "lora_speed.json"
    if lora.exists():
        results["adapter_epoch_vs_full_finetune_epoch"] = json.loads(lora.read_text())[
            "adapter_epoch_vs_full_finetune_epoch"]
    print(json.dumps(results))
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
