"""PNGs for people: activation statistics over training steps, and the LR finder's curve.

Layers are labelled by their module path (``tabular.mlp.blocks.2.act``), never by class name alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmtab.artifacts import write_atomically

if TYPE_CHECKING:
    from mmtab.diagnostics.activation_stats import ActivationStats
    from mmtab.diagnostics.lr_finder import LrFinderResult


def pyplot():  # noqa: ANN202 -- matplotlib's module
    """matplotlib's pyplot, drawing to files only (imported on first use: plots are optional)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_activation_stats(stats: ActivationStats, folder: str | Path) -> list[Path]:
    """Three PNGs in `folder`: means and stds, the histograms over time, the dormant fraction."""
    plt = pyplot()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = {name: (np.asarray(layer.steps), layer.table().numpy()) for name, layer in stats.layers.items()
              if layer.steps}
    paths = []

    fig, (ax_mean, ax_std) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for name, (steps, table) in layers.items():
        ax_mean.plot(steps, table[:, 0], label=name, lw=1)
        ax_std.plot(steps, table[:, 1], label=name, lw=1)
    ax_mean.set_ylabel("mean activation")
    ax_std.set_ylabel("std of activation")
    ax_std.set_yscale("log")
    ax_std.set_xlabel("training step")
    ax_mean.set_title("Activations per layer over training (training steps only)")
    ax_mean.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    paths.append(_save(fig, folder / "activation_mean_std.png"))

    n = len(layers)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (name, (steps, table)) in zip(axes.flat, layers.items()):
        hist = table[:, 3:].T  # (bins, records): the histogram of |activation| at each recorded step
        lo, hi = stats.hist_range
        ax.imshow(np.log1p(100 * hist), origin="lower", aspect="auto", cmap="viridis",
                  extent=(steps[0], steps[-1] + 1, np.log10(lo), np.log10(hi)))
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("log10 |activation|", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Histogram of log10 |activation| over training, per layer (brighter = more activations)",
                 fontsize=10)
    paths.append(_save(fig, folder / "activation_histograms.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    for name, (steps, table) in layers.items():
        ax.plot(steps, table[:, 2], label=name, lw=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"dormant fraction (|a| < {stats.dormant_below:g})")
    ax.set_title("Share of near-zero activations per layer")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    paths.append(_save(fig, folder / "dormant_fraction.png"))
    return paths


def plot_lr_finder(result: LrFinderResult, path: str | Path) -> Path:
    """The loss against the scale of the learning rates, with the suggested scale marked, as a PNG at `path`."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(result.scales, result.losses, lw=1.5)
    ax.set_xscale("log")
    ax.axvline(result.suggested_scale, color="tab:red", ls="--",
               label=f"suggested scale {result.suggested_scale:.3g}: "
                     + ", ".join(f"{n} {lr:.2g}" for n, lr in result.suggested_lrs.items()))
    ax.set_xlabel("scale of every part's configured learning rate (ratios kept)")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("LR finder")
    ax.legend(fontsize=8)
    return _save(fig, Path(path), dpi=90)


def _save(fig, path: Path, dpi: int = 72) -> Path:  # noqa: ANN001
    """Every PNG is written whole or not at all, as every file mmtab writes for a user."""
    fig.tight_layout()
    path = write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    pyplot().close(fig)
    return path
