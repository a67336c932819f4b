"""What a LoRA epoch costs against a full fine-tuning epoch: issue 20's ``adapter_epoch_vs_full_finetune_epoch``.

The text-only recipe (configs/reviews_text.yaml: MiniLM, mean pooling, the title and review joined)
trains one epoch on `--rows` reviews (stratified 80/20 split, seed 0) four ways, alternated
`--repeats` times on the same machine: the whole encoder fine-tuned (``parts.text.frozen: false``);
LoRA adapters on its last 3 layers (``model.net.text.lora``, MulTaBench's settings, the rest fixed)
trained inside the model; the target-aware adapter fit (``model.target_aware``: the same adapters,
the layers below them computed once and the encoder's own dropout off), one epoch of it scaled to
as many rows as the others' epochs (it holds a fifth of them out, and its epoch includes the pass
over those); and the frozen encoder with its cached vectors (the head alone trains: the floor).
Reported: the training phase's seconds per epoch (median), their ratios (the target-aware fit's is
``adapter_epoch_vs_full_finetune_epoch``), the trained weights of each, and the validation AUROC
after the epoch (one epoch on few rows: a sanity check, not a quality figure).

Prints one JSON line and writes benchmarks/results/lora_speed.json.

    python benchmarks/lora_speed.py [--rows 2000] [--repeats 2] [--precision 32-true]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from fastai_parity import timed_fit
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "lora_speed.json"
CONFIG = ROOT / "configs" / "reviews_text.yaml"
TARGET = "Recommended IND"
WAYS = {"full": ["--model.parts.text.frozen=false"],
        "lora": ["--model.parts.text.frozen=false", "--model.net.text.lora.last_layers=3"],
        "tar": ["--model.parts.text.frozen=true", "--model.net.text.lora.last_layers=3",
                '--model.target_aware={"max_epochs": 1}'],
        "frozen": ["--model.parts.text.frozen=true"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="32-true")
    args = parser.parse_args()
    df = pd.read_parquet(ROOT / "data" / "womens_clothing_reviews.parquet").sample(args.rows, random_state=0)
    _, valid = train_test_split(np.arange(len(df)), test_size=0.2, random_state=0, stratify=df[TARGET])
    split = np.full(len(df), "train", dtype=object)
    split[valid] = "valid"
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    result: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "reviews.parquet"
        df.assign(split=split).reset_index(drop=True).to_parquet(data)
        for i in range(args.repeats):
            for way in (WAYS if i % 2 == 0 else dict(reversed(WAYS.items()))):
                cli, timer = timed_fit(CONFIG, f"--data.path={data}", "--data.split_col=split",
                                       "--trainer.max_epochs=1", f"--trainer.precision={args.precision}",
                                       f"--trainer.default_root_dir={tmp}", "--data.max_length=128", *WAYS[way])
                epoch_s = timer.seconds
                if way == "tar":  # the adapter fit's epoch (its held-out pass included), over the others' rows
                    fit = cli.model.adapter_fits[0]
                    epoch_s = fit["seconds"] / fit["epochs"] * len(cli.datamodule.table("train")) / fit["rows"]
                seconds[way].append(round(epoch_s, 2))
                net = cli.model.net
                result[way] = {"trained_text_weights": sum(p.numel() for p in net.text.parameters() if p.requires_grad),
                               "val_auroc_after_one_epoch": round(float(cli.trainer.callback_metrics["val_auroc"]), 4)}
                print(f"{way} {i}: {epoch_s:.1f} s", flush=True)
    median = {way: statistics.median(s) for way, s in seconds.items()}
    out = {"rows": args.rows, "precision": args.precision,
           **{way: {**result[way], "epoch_s": seconds[way], "median_epoch_s": median[way]} for way in WAYS},
           "adapter_epoch_vs_full_finetune_epoch": round(median["tar"] / median["full"], 4),
           "lora_in_the_model_epoch_vs_full_finetune_epoch": round(median["lora"] / median["full"], 4),
           "frozen_epoch_vs_full_finetune_epoch": round(median["frozen"] / median["full"], 4)}
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
