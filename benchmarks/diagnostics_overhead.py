"""What watching costs: mmtab's adult training throughput with `ActivationStats` on, as a ratio to the
same run with it off, measured in the same process (fastai's recipe from configs/adult.yaml, the
reference split). Off and on alternate, and each keeps its best of `--repeats`, so a busy moment of
the machine does not decide the ratio. Prints one JSON line.

    python benchmarks/diagnostics_overhead.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import pandas as pd
import torch
from fastai_parity import DATA, reference_split, run_mmtab, split_column  # the same timed training loop

from mmtab.diagnostics.activation_stats import ActivationStats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    df = pd.read_parquet(DATA)
    _, valid_idx = reference_split(df)
    split = split_column(df, valid_idx)
    settings = {"off": lambda: (), "every_step": lambda: (ActivationStats(log=False, plot=False),),
                "every_10_steps": lambda: (ActivationStats(every_n_steps=10, log=False, plot=False),)}
    best = {name: 0.0 for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        split_file = Path(tmp) / "adult_split.parquet"
        df.assign(split=split).to_parquet(split_file)
        for _ in range(args.repeats):
            for name, callbacks in settings.items():
                result = run_mmtab(split_file, df.iloc[valid_idx], 0, callbacks=callbacks())
                best[name] = max(best[name], result["samples_per_s"])
    print(json.dumps({"benchmark": "diagnostics_overhead", "dataset": "adult", "recipe": "configs/adult.yaml",
                      "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
                      "samples_per_s": {k: round(v) for k, v in best.items()},
                      "throughput_ratio_every_step": round(best["every_step"] / best["off"], 3),
                      "throughput_ratio_every_10_steps": round(best["every_10_steps"] / best["off"], 3)}))


if __name__ == "__main__":
    main()
