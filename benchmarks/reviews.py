"""The reviews benchmark: tabular-only, text-only (fine-tuned), fusion (each fusion class, fine-tuned),
fusion with a frozen encoder, and fusion started from the text-only checkpoint.

Every model is trained from a shipped config through the CLI, on the reference split (stratified
80/20, random_state=42, see shared/data/README.md), and scored on the validation rows by one
function (AUROC, accuracy, log-loss). Each finished model's result is kept in
``benchmarks/results/reviews/<model>.json`` and reused, so long runs can go in pieces:

    python benchmarks/reviews.py --models tabular fusion_frozen       # minutes on a CPU
    python benchmarks/reviews.py --models text fusion_from_text       # ~30 min per fine-tuned model on 2 cores
    python benchmarks/reviews.py --precision bf16-mixed ...           # twice as fast on an AVX512-BF16 CPU
    python benchmarks/reviews.py                                      # every model; reuses finished ones

The last line is one JSON object with every finished model (and `subsample` where rows were cut).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split

from mmtab.cli import MmtabCLI
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.predict import predict_frame
from mmtab.training.module import MultimodalModule

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "womens_clothing_reviews.parquet"
RESULTS = ROOT / "benchmarks" / "results" / "reviews"
TARGET = "Recommended IND"
FUSION = "--model.net"

# model name -> (config, extra CLI arguments). `fusion_*` fine-tune the encoder inside the fusion
# model (one stage); `fusion_from_text*` start from the text model's checkpoint and train the fusion
# layer, tabular branch and head on the fine-tuned, frozen encoder (two stages), one per fusion class.
MODELS: dict[str, tuple[str, list[str]]] = {
    "tabular": ("reviews_tabular.yaml", []),
    "text": ("reviews_text.yaml", []),
    "fusion_concat": ("reviews_fusion.yaml", []),
    "fusion_gated": ("reviews_fusion.yaml", [f"{FUSION}.fusion=mmtab.GatedFusion"]),
    "fusion_attention": ("reviews_fusion.yaml", [f"{FUSION}.fusion=mmtab.AttentionFusion"]),
    "fusion_frozen": ("reviews_demo.yaml", []),
    "fusion_from_text": ("reviews_fusion_from_text.yaml", []),
    "fusion_from_text_gated": ("reviews_fusion_from_text.yaml", [f"{FUSION}.fusion=mmtab.GatedFusion"]),
    "fusion_from_text_attention": ("reviews_fusion_from_text.yaml", [f"{FUSION}.fusion=mmtab.AttentionFusion"]),
}


def reference_split(df: pd.DataFrame) -> np.ndarray:
    _, valid = train_test_split(np.arange(len(df)), test_size=0.2, random_state=42, stratify=df[TARGET])
    split = np.full(len(df), "train", dtype=object)
    split[valid] = "valid"
    return split


def run(name: str, split_file: Path, valid: pd.DataFrame, work: Path, args: argparse.Namespace) -> dict:
    config, extra = MODELS[name]
    ckpt_dir = work / name
    overrides = [f"--data.path={split_file}", "--data.split_col=split", f"--trainer.default_root_dir={ckpt_dir}",
                 "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                 f"--trainer.accelerator={args.accelerator}"]
    if args.precision:
        overrides.append(f"--trainer.precision={args.precision}")
    if name.startswith("fusion_from_text"):
        text_ckpt = RESULTS / "text.ckpt"
        if not text_ckpt.exists():
            raise SystemExit("fusion_from_text needs the text model first: run --models text")
        overrides.append(f"--model.init_from={text_ckpt}")
    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=False,
                   save_config_callback=None, args=["--config", str(ROOT / "configs" / config), *extra, *overrides])
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    fit_seconds = time.perf_counter() - start
    if name == "text":  # kept for fusion_from_text
        cli.trainer.save_checkpoint(RESULTS / "text.ckpt")
    table = predict_frame(cli.model, cli.datamodule.preprocessor, valid, batch_size=256)
    p = table["prob_1"].to_numpy()
    y = valid[TARGET].to_numpy()
    return {"auroc": round(float(roc_auc_score(y, p)), 4), "accuracy": round(float(accuracy_score(y, p > 0.5)), 4),
            "log_loss": round(float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7))), 4),
            "fit_seconds": round(fit_seconds, 1), "epochs": cli.trainer.current_epoch,
            "device": torch.cuda.get_device_name() if args.accelerator == "gpu" else "cpu",
            "precision": args.precision or "32-true"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--force", action="store_true", help="retrain models that already have a result")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--precision", default=None, help="e.g. bf16-mixed on a GPU")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    df = pd.read_parquet(DATA)
    split = reference_split(df)
    valid = df[split == "valid"]
    with tempfile.TemporaryDirectory() as tmp:
        split_file = Path(tmp) / "reviews_split.parquet"
        df.assign(split=split).to_parquet(split_file)
        for name in args.models:
            out = RESULTS / f"{name}.json"
            if out.exists() and not args.force:
                print(f"{name}: reusing {out}", flush=True)
                continue
            result = run(name, split_file, valid, Path(tmp), args)
            out.write_text(json.dumps(result))
            print(f"{name}: {result}", flush=True)
    summary = {"benchmark": "reviews", "split": "stratified 80/20 rs=42", "train_rows": int((split == "train").sum()),
               "valid_rows": int(len(valid)), "subsample": None}
    for name in MODELS:
        out = RESULTS / f"{name}.json"
        summary[name] = json.loads(out.read_text()) if out.exists() else "not run"
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
