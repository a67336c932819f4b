"""What the modality report costs, and what its branch heads' loss weight does to the fused model.

Two measurements, on the two cases of benchmarks/fusion_candidates.py (the reviews demo: frozen
MiniLM, 23k rows, the reference split; the weak-text case: 3,000 rows of adult beside a weakly
related review, configs/small_table_text.yaml):

* ``overhead``: the reviews demo's fit (warm embedding cache) with and without branch heads
  (``--model.net.branch_heads``), alternated, `--repeats` pairs; the ratio of the medians. The
  heads' steps and the report at each validation are all that differ.
* ``weights``: ``model.net.branch_loss_weight`` 0 (the heads only watch), 0.3 and 1 (each branch
  also trained to predict the target alone), per case over `--seeds`: the fused model's validation
  scores at its best epoch (by val_loss), and the report's three rows (seed means).

Prints one JSON line and writes benchmarks/results/modality_report.json.

    python benchmarks/modality_report.py [--measure overhead weights] [--seeds 0 1 2] [--repeats 3]
                                         [--weights 0 0.3 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from fusion_candidates import CASES, case_data
from tabular_quality import fit_mmtab, mean_over_seeds, mmtab_scores

from mmtab.explanations.modality import REPORT_KEY

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "modality_report.json"


def overhead(repeats: int, tmp: Path) -> dict[str, object]:
    data, _ = case_data("reviews", tmp)
    config = ROOT / "configs" / "reviews_demo.yaml"
    fit_mmtab(config, data, 0, tmp / "warm")  # fills the embedding cache, so every timed fit reads it
    times: dict[str, list[float]] = {"without": [], "with": []}
    for i in range(repeats):
        for heads in ("without", "with") if i % 2 == 0 else ("with", "without"):
            flag = "true" if heads == "with" else "false"
            fit_s, _ = fit_mmtab(config, data, 0, tmp / f"o_{heads}_{i}", f"--model.net.branch_heads={flag}")
            times[heads].append(round(fit_s, 2))
            print(f"overhead {heads} {i}: {fit_s:.1f} s", flush=True)
    ratio = statistics.median(times["with"]) / statistics.median(times["without"])
    return {"fit_s": times, "ratio_with_to_without": round(ratio, 4)}


def weights(case: str, values: list[float], seeds: list[int], tmp: Path) -> dict[str, object]:
    data, valid = case_data(case, tmp)
    _, target, positive, config, _ = CASES[case]
    out = {}
    for w in values:
        scores, reports = [], []
        for seed in seeds:
            fit_s, best = fit_mmtab(ROOT / "configs" / config, data, seed, tmp / f"{case}_{w}_{seed}",
                                    f"--model.net.branch_loss_weight={w}")
            scores.append({**mmtab_scores(best, valid, target, positive), "fit_s": fit_s})
            reports.append(torch.load(best, weights_only=True, map_location="cpu")[REPORT_KEY]["heads"])
            print(f"{case} weight {w} seed {seed}: {scores[-1]}", flush=True)
        rows = {head: {k: round(float(np.mean([r[head][k] for r in reports])), 4) for k in ("auroc", "loss")}
                for head in reports[0]}
        out[str(w)] = {"fused": mean_over_seeds(scores), "report": rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.3, 1.0])
    parser.add_argument("--measure", nargs="+", choices=["overhead", "weights"], default=["overhead", "weights"])
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "overhead" in args.measure:
            results["overhead"] = overhead(args.repeats, tmp)
        if "weights" in args.measure:
            results["weights"] = {case: weights(case, args.weights, args.seeds, tmp)
                                  for case in ("reviews", "weak_text")}
            results["seeds"] = args.seeds
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
