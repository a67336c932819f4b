"""The explain room's PNGs, for people: column importance as bars, and the reliability diagram."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from torch import Tensor

from mmtab.artifacts import write_atomically
from mmtab.diagnostics.plots import pyplot
from mmtab.explanations.calibration import BINS, expected_calibration_error, reliability

KIND_COLOURS = {"categorical": "tab:blue", "continuous": "tab:green", "date": "tab:purple", "text": "tab:orange"}


def plot_importance(table: pd.DataFrame, path: str | Path, *, metric: str, title: str) -> Path:
    """Horizontal bars, most important on top, each with its spread over the shuffles, coloured by the
    column's kind; a line at zero (a column the model ignores sits on it)."""
    plt = pyplot()
    table = table.iloc[::-1]  # barh draws bottom-up
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.38 * len(table)))
    colours = [KIND_COLOURS.get(k, "grey") for k in table["kind"]]
    ax.barh(table["column"], table["importance"], xerr=table["std"], color=colours, capsize=3)
    ax.axvline(0, color="black", lw=0.8)
    low = float(min(0.0, (table["importance"] - table["std"]).min()))
    high = float(max((table["importance"] + table["std"]).max(), 1e-3))
    ax.set_xlim(low - 0.05 * (high - low), high + 0.05 * (high - low))
    ax.set_xlabel(f"drop in {metric} when the column is shuffled (mean ± std over shuffles)")
    ax.set_title(title)
    from matplotlib.patches import Patch

    kinds = [k for k in KIND_COLOURS if k in set(table["kind"])]
    ax.legend(handles=[Patch(color=KIND_COLOURS[k], label=k) for k in kinds], loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(before: Tensor, after: Tensor | None, target: Tensor, path: str | Path, *,
                     title: str) -> Path:
    """A reliability diagram: accuracy against confidence per bin, before (and after) calibration,
    beside the diagonal a calibrated model follows, with the rows per bin below."""
    plt = pyplot()
    fig, (ax, ax_rows) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="calibrated (accuracy = confidence)")
    edges = np.linspace(0, 1, BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    for probs, name, colour in ((before, "before", "tab:red"), (after, "after", "tab:blue")):
        if probs is None:
            continue
        conf, acc, rows = reliability(probs, target)
        ece = expected_calibration_error(probs, target)
        shown = rows > 0
        ax.plot(conf[shown], acc[shown], marker="o", color=colour, label=f"{name} (ECE {ece:.4f})")
        ax_rows.bar(centres, rows, width=1 / BINS * (0.45 if after is not None else 0.9),
                    align="edge" if name == "after" else "center", color=colour, alpha=0.6, label=name)
    ax.set_ylabel("accuracy of the rows in the bin")
    ax.set_title(title)
    ax.legend(loc="upper left")
    low = 1.0 / before.shape[1]  # the highest of C probabilities is at least 1/C
    accuracies = [reliability(p, target)[1] for p in (before, after) if p is not None]
    floor = min(low, float(np.nanmin(np.concatenate(accuracies))))
    ax.set_xlim(low - 0.02, 1.0)
    ax.set_ylim(max(0.0, floor - 0.05), 1.0)
    ax_rows.set_yscale("log")
    ax_rows.set_xlabel("confidence (the highest class probability)")
    ax_rows.set_ylabel("rows")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:  # noqa: ANN001 -- matplotlib's Figure
    plt = pyplot()
    path = Path(path)
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
