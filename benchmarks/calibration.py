"""Does temperature scaling pay, on rows it was not fitted on? The measure behind ``model.calibrate``'s default.

For each case a shipped config is fitted (`--seeds`), its best checkpoint (by val_loss) predicts the
validation rows, and the temperature is cross-fitted on them: fitted on one half, measured on the
other, and the other way round (`mmtab.explanations.calibration.fit_temperature`, the function a fit
with ``model.calibrate: true`` uses). Reported per case, as means over seeds and halves: the log loss
and expected calibration error (15 bins, top label) before and after, the temperature, and how many
predicted classes changed (none may).

* ``reviews``: configs/reviews_demo.yaml on the reference split (binary, frozen MiniLM);
* ``weak_text``: configs/small_table_text.yaml on data/adult_weak_text.parquet (binary, 1,000 validation rows);
* ``rating``: configs/reviews_rating.yaml on the reference split (ordinal 1-5, CORN);
* ``adult``: configs/adult.yaml, a stratified 80/20 split (binary, the table alone).

Prints one JSON line and writes benchmarks/results/calibration.json.

    python benchmarks/calibration.py [--cases reviews weak_text rating adult] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fusion_candidates import case_data
from sklearn.model_selection import train_test_split
from tabular_quality import fit_mmtab

from mmtab.data.dataset import TensorTable
from mmtab.explanations.calibration import expected_calibration_error, fit_temperature
from mmtab.explanations.importance import head_outputs
from mmtab.training.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "calibration.json"
CASES = {"reviews": ("reviews", "reviews_demo.yaml"), "weak_text": ("weak_text", "small_table_text.yaml"),
         "rating": ("reviews", "reviews_rating.yaml"), "adult": ("adult", "adult.yaml")}


def data_for(source: str, tmp: Path) -> tuple[Path, pd.DataFrame]:
    if source != "adult":
        return case_data(source, tmp)
    df = pd.read_parquet(ROOT / "data" / "adult.parquet")
    _, valid = train_test_split(np.arange(len(df)), test_size=0.2, random_state=0, stratify=df["income"])
    split = np.full(len(df), "train", dtype=object)
    split[valid] = "valid"
    path = tmp / "adult.parquet"
    df.assign(split=split).to_parquet(path)
    return path, df[split == "valid"]


def cross_fitted(module, output: torch.Tensor, target: torch.Tensor, seed: int) -> dict[str, float]:
    """Temperature fitted on one half of the rows, measured on the other, both ways; the means."""
    halves = torch.randperm(len(target), generator=torch.Generator().manual_seed(seed)).chunk(2)
    runs = []
    for fit_rows, eval_rows in ((halves[0], halves[1]), (halves[1], halves[0])):
        fit_out, fit_y = output[fit_rows], target[fit_rows]
        t = fit_temperature(lambda temp, o=fit_out, y=fit_y: float(module.task.loss(o / temp, y).mean()))
        out, y = output[eval_rows], target[eval_rows]
        raw, scaled = module.task.activate(out), module.task.activate(out / t)
        runs.append({"temperature": t,
                     "log_loss_before": float(module.task.loss(out, y).mean()),
                     "log_loss_after": float(module.task.loss(out / t, y).mean()),
                     "ece_before": expected_calibration_error(raw, y),
                     "ece_after": expected_calibration_error(scaled, y),
                     "changed_classes": int((module.task.predicted_class(raw.numpy())
                                             != module.task.predicted_class(scaled.numpy())).sum())})
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for case in args.cases:
            source, config = CASES[case]
            data, valid = data_for(source, tmp)
            runs = []
            for seed in args.seeds:
                _, best = fit_mmtab(ROOT / "configs" / config, data, seed, tmp / f"{case}_{seed}")
                module, pre = load_checkpoint(best)
                table = TensorTable(pre.transform(valid))
                module.text_embeddings.attach(module.net, table)
                output = head_outputs(module, table.tensors)
                runs.append(cross_fitted(module, output, table.tensors["target"], seed))
                print(f"{case} seed {seed}: {runs[-1]}", flush=True)
            mean = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0]}
            mean["worse_log_loss_runs"] = sum(r["log_loss_after"] > r["log_loss_before"] for r in runs)
            mean["worse_ece_runs"] = sum(r["ece_after"] > r["ece_before"] for r in runs)
            results[case] = {**mean, "seeds": args.seeds}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
