"""Does initialisation matter? The study users otherwise do by hand, on adult (reference split).

A deep narrow tabular branch (10 hidden layers of 40 units, ReLU, no BatchNorm, so init matters)
trained with PyTorch's default init, `kaiming` and `lsuv` (mmtab.diagnostics.Initialize), 3 seeds
each, the same one-cycle schedule. A fourth variant, `lsuv_general_relu`, uses GeneralRelu(0.1, 0.4),
whose output LSUV can also centre. Writes loss curves and dormant-fraction plots, the three
ActivationStats PNGs of the default-init run (seed 0) for docs/diagnostics.md, and prints one JSON
line (kept in results/init_study/init_study.json): per init the final validation loss, accuracy and
AUROC (mean and std over seeds), the step at which the smoothed training loss first falls below
THRESHOLD, and the mean dormant fraction over the first 10% of steps.

    python benchmarks/init_study.py            # under a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from fastai_parity import CAT, CONT, DATA, reference_split, split_column  # adult's columns and split

from mmtab import FusionModel, GeneralRelu, MultimodalModule, TabularMLP, TabularTextDataModule
from mmtab.diagnostics.activation_stats import ActivationStats
from mmtab.diagnostics.init import Initialize
from mmtab.diagnostics.plots import plot_activation_stats, pyplot

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "init_study"
README_PLOTS = ROOT / "docs" / "diagnostics"
THRESHOLD = 0.40  # training loss; the class prior alone gives 0.55, a trained model about 0.30
INITS = {"default": {}, "kaiming": {"tabular": "kaiming", "head": "kaiming"},
         "lsuv": {"tabular": "lsuv"}, "lsuv_general_relu": {"tabular": "lsuv"}}


class Losses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.values.append(float(outputs["loss"]))


def smooth(values: list[float], beta: float = 0.9) -> np.ndarray:
    out, avg = [], 0.0
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return np.asarray(out)


def run(frame: pd.DataFrame, init: str, seed: int, args: argparse.Namespace) -> dict:
    pl.seed_everything(seed, verbose=False)
    dm = TabularTextDataModule.from_frame(frame, target="income", categorical_cols=CAT, continuous_cols=CONT,
                                          split_col="split", batch_size=args.batch_size, seed=seed)
    activation = (lambda: GeneralRelu(leak=0.1, sub=0.4)) if init == "lsuv_general_relu" else None
    net = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=[40] * 10, bn=False,
                                                                 bn_cont=False, activation=activation))
    module = MultimodalModule(net, task=dm.fitted_task, lr=args.lr, weight_decay=0.01)
    losses = Losses()
    stats = ActivationStats(modules=["tabular.mlp.blocks.*.act"], log=False, plot=False)
    callbacks = [losses, stats] + ([Initialize(INITS[init])] if INITS[init] else [])
    trainer = pl.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1, num_sanity_val_steps=0,
                         callbacks=callbacks)
    trainer.fit(module, dm)
    curve = smooth(losses.values)
    below = np.flatnonzero(curve < THRESHOLD)
    dormant = np.stack([layer.table()[:, 2].numpy() for layer in stats.layers.values()]).mean(axis=0)  # (steps,)
    first = max(1, len(dormant) // 10)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
    return {"val_loss": metrics["val_loss"], "accuracy": metrics["val_accuracy"], "auroc": metrics["val_auroc"],
            "steps_to_threshold": int(below[0]) if len(below) else None,
            "dormant_first_10pct": float(dormant[:first].mean()), "curve": curve, "dormant": dormant,
            "stats": stats}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for key in ("val_loss", "accuracy", "auroc", "dormant_first_10pct"):
        values = np.asarray([r[key] for r in runs])
        out[key] = {"mean": round(float(values.mean()), 4), "std": round(float(values.std()), 4)}
    steps = [r["steps_to_threshold"] for r in runs]
    out["steps_to_threshold"] = steps if None in steps else {"mean": float(np.mean(steps)), "per_seed": steps}
    return out


def plot_study(results: dict[str, list[dict]], folder: Path, steps_per_epoch: int) -> None:
    plt = pyplot()
    colours = dict(zip(results, ["tab:gray", "tab:blue", "tab:green", "tab:purple"]))
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for init, runs in results.items():
        for i, r in enumerate(runs):
            ax.plot(r["curve"], color=colours[init], lw=1, alpha=0.8, label=init if i == 0 else None)
    ax.axhline(THRESHOLD, color="k", ls=":", lw=1, label=f"threshold {THRESHOLD}")
    ax.set_xlabel(f"training step ({steps_per_epoch} per epoch)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("Deep narrow ReLU net on adult (10 x 40, no BatchNorm): loss by initialisation, 3 seeds each")
    ax.set_ylim(0.25, 0.75)
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "loss_curves.png", dpi=72)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for init, runs in results.items():
        for i, r in enumerate(runs):
            ax.plot(r["dormant"], color=colours[init], lw=1, alpha=0.8, label=init if i == 0 else None)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel("dormant fraction, mean over the 10 activations")
    ax.set_title("Share of near-zero activations (|a| < 0.25) by initialisation, 3 seeds each")
    ax.legend()
    fig.tight_layout()
    fig.savefig(folder / "dormant_fraction_by_init.png", dpi=72)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-2)
    args = parser.parse_args()
    frame = pd.read_parquet(DATA)
    _, valid = reference_split(frame)
    frame = frame.assign(split=split_column(frame, valid))
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {init: [run(frame, init, seed, args) for seed in args.seeds] for init in INITS}
    steps_per_epoch = (frame["split"] == "train").sum() // args.batch_size
    plot_study(results, RESULTS, steps_per_epoch)
    README_PLOTS.mkdir(parents=True, exist_ok=True)
    for path in plot_activation_stats(results["default"][0]["stats"], README_PLOTS):
        print(f"wrote {path}")
    line = {"benchmark": "init_study", "dataset": "adult", "split": "stratified 80/20 rs=42",
            "net": "tabular 10x40 ReLU, no BatchNorm", "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "seeds": args.seeds, "threshold": THRESHOLD,
            **{init: summarise(runs) for init, runs in results.items()}}
    print(json.dumps(line))
    (RESULTS / "init_study.json").write_text(json.dumps(line) + "\n")  # the figures docs/diagnostics.md cites


if __name__ == "__main__":
    main()
