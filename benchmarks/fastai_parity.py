"""mmtab vs fastai's tabular_learner on adult: same split, same recipe, same process, 3 seeds each.

The recipe is fastai's classic one (layers [200, 100], batch 1024, 5 epochs one-cycle at 1e-2, Adam
with decoupled weight decay 0.01); mmtab runs it from the shipped ``configs/adult.yaml`` through the
CLI, with the split replaced by the reference split below. Both models are scored by the same
function on their validation probabilities. Throughput is training samples per second over the
training phase only (validation excluded), measured by a callback in each framework.

Needs fastai in the environment (``../shared/tools/install_fastai.sh``); it is not a dependency of
mmtab. Last line: one JSON object.

    python benchmarks/fastai_parity.py [--seeds 0 1 2] [--accelerator gpu]

Both frameworks run on the one accelerator named (``cpu`` unless told): neither picks a GPU by itself.
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
import torch
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split

from mmtab.cli import MmtabCLI
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.predict import predict_frame
from mmtab.training.module import MultimodalModule

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "adult.yaml"
DATA = ROOT / "data" / "adult.parquet"
CAT = ["workclass", "education", "marital-status", "occupation", "relationship", "race", "gender", "native-country"]
CONT = ["age", "fnlwgt", "educational-num", "capital-gain", "capital-loss", "hours-per-week"]
TARGET, POSITIVE = "income", ">50K"
BATCH, EPOCHS, LR, LAYERS = 1024, 5, 1e-2, [200, 100]


def reference_split(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The split used everywhere (shared/data/README.md): stratified 80/20, random_state=42."""
    return train_test_split(np.arange(len(df)), test_size=0.2, random_state=42, stratify=df[TARGET])


def split_column(df: pd.DataFrame, valid_idx: np.ndarray) -> np.ndarray:
    """``train`` / ``valid`` per row, for ``data.split_col``."""
    split = np.full(len(df), "train", dtype=object)
    split[valid_idx] = "valid"
    return split


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a clock read after it has seen that work finish."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def torch_device(accelerator: str) -> torch.device:
    """Lightning's accelerator name -> the torch device it trains on."""
    return torch.device("cuda" if accelerator == "gpu" else "cpu")


def device_name(accelerator: str) -> str:
    """What a result's ``device`` says: the GPU's model, or ``cpu``."""
    return torch.cuda.get_device_name() if accelerator == "gpu" else "cpu"


def accelerator_arg(accelerator: str) -> str:
    """The CLI argument that puts an mmtab run on `accelerator`."""
    return f"--trainer.accelerator={accelerator}"


def score(y_true: np.ndarray, p_positive: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(y_true, p_positive > 0.5)),
            "auroc": float(roc_auc_score(y_true, p_positive))}


# ------------------------------------------------------------------------------------------ fastai
def run_fastai(df: pd.DataFrame, train_idx: np.ndarray, valid_idx: np.ndarray, seed: int,
               accelerator: str = "cpu") -> dict[str, float]:
    from fastai.tabular.all import (
        Callback,
        Categorify,
        CategoryBlock,
        FillMissing,
        Normalize,
        TabularPandas,
        set_seed,
        tabular_learner,
    )

    class TrainTimer(Callback):
        order = 0
        seconds, samples = 0.0, 0

        def before_train(self):
            synchronize(self.dls.device)
            self.t0 = time.perf_counter()

        def after_train(self):
            synchronize(self.dls.device)
            TrainTimer.seconds += time.perf_counter() - self.t0
            TrainTimer.samples += len(self.dls.train) * self.dls.train.bs

    set_seed(seed, reproducible=False)
    to = TabularPandas(df, procs=[Categorify, FillMissing, Normalize], cat_names=CAT, cont_names=CONT,
                       y_names=TARGET, y_block=CategoryBlock(), splits=(list(train_idx), list(valid_idx)))
    dls = to.dataloaders(bs=BATCH, device=torch_device(accelerator))
    learn = tabular_learner(dls, layers=LAYERS, cbs=[TrainTimer()])
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(EPOCHS, LR)
        probs, _ = learn.get_preds(dl=dls.valid)
    positive = list(dls.vocab).index(POSITIVE)
    y = (df[TARGET].to_numpy()[valid_idx] == POSITIVE).astype(int)
    return {**score(y, probs[:, positive].numpy()), "samples_per_s": TrainTimer.samples / TrainTimer.seconds}


# ------------------------------------------------------------------------------------------- mmtab
class TrainTimer(pl.Callback):
    """Seconds and samples of the training phase: from each epoch's start to its validation (or end);
    `epochs` holds each epoch's seconds."""

    def __init__(self) -> None:
        self.seconds, self.samples, self._t0 = 0.0, 0, None
        self.epochs: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        synchronize(pl_module.device)
        self._t0 = time.perf_counter()

    def _stop(self, trainer) -> None:
        if self._t0 is not None:
            synchronize(trainer.lightning_module.device)
            self.epochs.append(time.perf_counter() - self._t0)
            self.seconds += self.epochs[-1]
            rows = len(trainer.datamodule.table("train"))  # an epoch serves every row, in near-equal batches
            self.samples += min(trainer.num_training_batches * trainer.datamodule.batch_size, rows)
            self._t0 = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop(trainer)


def build_cli(config: Path, *args: str, own_callbacks: bool = False) -> MmtabCLI:
    """A shipped config built through the CLI, not yet trained: no logger or progress bar. For
    timing (the default) no checkpoints, callbacks or sanity check either; `own_callbacks` keeps the
    config's callbacks (early stopping, the best checkpoint)."""
    bare = [] if own_callbacks else ["--trainer.callbacks=[]", "--trainer.enable_checkpointing=false",
                                     "--trainer.num_sanity_val_steps=0"]
    return MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=False,
                    save_config_callback=None, args=[
        "--config", str(config), "--trainer.logger=false", "--trainer.enable_progress_bar=false", *bare, *args])


def timed_fit(config: Path, *args: str, callbacks: tuple = ()) -> tuple[MmtabCLI, TrainTimer]:
    """Fit a config (`callbacks` join the timed training); the trained CLI and its training times."""
    cli = build_cli(config, *args)
    timer = TrainTimer()
    cli.trainer.callbacks.extend([timer, *callbacks])
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli, timer


def recipe_args(split_file: Path, seed: int, accelerator: str = "cpu") -> list[str]:
    """mmtab's fastai recipe (configs/adult.yaml) on the reference split, on `accelerator`."""
    return [f"--seed_everything={seed}", f"--data.seed={seed}", f"--data.path={split_file}", "--data.split_col=split",
            accelerator_arg(accelerator)]


def run_mmtab(split_file: Path, valid: pd.DataFrame, seed: int, callbacks: tuple = (),
              accelerator: str = "cpu") -> dict[str, float]:
    """Train the recipe on the split and score it; `callbacks` join the timed training."""
    cli, timer = timed_fit(CONFIG, *recipe_args(split_file, seed, accelerator), callbacks=callbacks)
    table = predict_frame(cli.model, cli.datamodule.preprocessor, valid)
    y = (valid[TARGET].to_numpy() == POSITIVE).astype(int)
    return {**score(y, table[f"prob_{POSITIVE}"].to_numpy()), "samples_per_s": timer.samples / timer.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    args = parser.parse_args()
    df = pd.read_parquet(DATA)
    train_idx, valid_idx = reference_split(df)
    split = split_column(df, valid_idx)
    results: dict[str, list[dict[str, float]]] = {"fastai": [], "mmtab": []}
    with tempfile.TemporaryDirectory() as tmp:
        split_file = Path(tmp) / "adult_split.parquet"
        df.assign(split=split).to_parquet(split_file)
        for seed in args.seeds:
            results["fastai"].append(run_fastai(df, train_idx, valid_idx, seed, args.accelerator))
            results["mmtab"].append(run_mmtab(split_file, df.iloc[valid_idx], seed, accelerator=args.accelerator))
            print(f"seed {seed}: fastai {results['fastai'][-1]}  mmtab {results['mmtab'][-1]}", flush=True)
    summary: dict[str, object] = {"benchmark": "fastai_parity", "dataset": "adult", "split": "stratified 80/20 rs=42",
                                  "seeds": args.seeds, "batch_size": BATCH, "epochs": EPOCHS,
                                  "torch_threads": torch.get_num_threads(),
                                  "device": device_name(args.accelerator)}
    for name, runs in results.items():
        for key in ("accuracy", "auroc", "samples_per_s"):
            summary[f"{name}_{key}"] = round(float(np.mean([r[key] for r in runs])), 4 if key != "samples_per_s" else 0)
    summary["throughput_ratio"] = round(summary["mmtab_samples_per_s"] / summary["fastai_samples_per_s"], 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
