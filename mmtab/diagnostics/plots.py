"""PNGs for people: activation statistics over training steps, and the LR finder's curve.

Layers are labelled by their module path (``tabular.mlp.blocks.2.act``), never by class name alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mmtab.diagnostics.activation_stats import ActivationStats


def _pyplot():  # noqa: ANN202 -- matplotlib's module
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_activation_stats(stats: ActivationStats, folder: str | Path) -> list[Path]:
    """Three PNGs in `folder`: means and stds, the histograms over time, the dormant fraction."""
    plt = _pyplot()
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
        ax.imshow(np.log1p(100 * hist), origin="lower", aspect="auto", cmap="viridis",
                  extent=(steps[0], steps[-1] + 1, 0, stats.hist_max))
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("|activation|", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Histogram of |activation| over training, per layer (brighter = more activations)", fontsize=10)
    paths.append(_save(fig, folder / "activation_histograms.png"))

    fig, ax = plt.subplots(figsize=(10, 4))
    for name, (steps, table) in layers.items():
        ax.plot(steps, table[:, 2], label=name, lw=1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"dormant fraction (|a| < {stats.hist_max / stats.bins:g})")
    ax.set_title("Share of near-zero activations per layer")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    paths.append(_save(fig, folder / "dormant_fraction.png"))
    return paths


def _save(fig, path: Path) -> Path:  # noqa: ANN001
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    _pyplot().close(fig)
    return path
