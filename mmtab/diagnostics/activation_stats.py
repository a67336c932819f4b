"""`ActivationStats`: what each layer's activations look like as training goes, from training steps only.

A Lightning callback that attaches forward hooks when fitting starts and removes them when it ends
(or fails). It records only inside training batches: a validation, sanity-check, test or predict
pass never reaches the record, so evaluation batches cannot show up as false periodic spikes.
Per chosen layer it keeps the mean, the standard deviation, the dormant fraction (the share of
|activation| below ``dormant_below``) and a histogram of |activation| in bins of equal width on a
log scale, so a layer whose activations grow from 0.5 to 50 in training keeps its spread visible
where equal-width bins over a fixed range would pile them into the last bin. The statistics stay on the
device until they are read; memory is bounded by thinning the kept steps when they pass
`max_records`.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from mmtab.models.blocks import GeneralRelu
from mmtab.models.text import encoder_blocks

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, GeneralRelu)
DEFAULT_PARTS = ("tabular", "fusion", "head")


@dataclass
class LayerStats:
    """The kept records of one layer: per record a step, a mean, a std and a histogram."""

    steps: list[int] = field(default_factory=list)
    stats: list[Tensor] = field(default_factory=list)  # each (3 + bins,): mean, std, dormant, histogram

    def table(self) -> Tensor:
        """(records, 3 + bins) on the CPU."""
        return torch.stack(self.stats).cpu() if self.stats else torch.zeros(0, 3)


def layer_statistics(output: Tensor, bins: int, hist_range: tuple[float, float], dormant_below: float) -> Tensor:
    """(3 + bins,): mean, std, dormant fraction (|activation| < `dormant_below`), and the share of
    |activation| in each of `bins` bins of equal width in log10 over `hist_range` (smaller values,
    zeros included, are counted in the first bin, larger ones in the last)."""
    x = output.detach().float()
    lo, hi = hist_range
    magnitude = torch.log10(x.abs().clamp(lo, hi))
    hist = torch.histc(magnitude, bins=bins, min=math.log10(lo), max=math.log10(hi)) / max(x.numel(), 1)
    dormant = (x.abs() < dormant_below).float().mean() if x.numel() else x.new_zeros(())
    return torch.cat([torch.stack([x.mean(), x.std() if x.numel() > 1 else x.new_zeros(()), dormant]), hist])


class ActivationStats(pl.Callback):
    """Record activation statistics of chosen layers in training steps.

    Args:
        modules: module paths inside the model (``tabular.mlp.blocks.0.act``), glob patterns allowed
            (``head.*``). Default: every Linear and activation of the tabular branch, the fusion
            layer and the head.
        text_layers: also record the outputs of the text encoder's blocks (its embeddings and transformer
            layers: `mmtab.models.text.encoder_blocks`).
        every_n_steps: record every this many training steps.
        max_records: keep at most this many records per layer; beyond it every other record is
            dropped and the interval doubles, so a long run keeps a bounded, even sample.
        bins: histogram bins, of equal width in log10 |activation|.
        hist_range: the histogram's range of |activation|; values outside land in the first or last bin.
        dormant_below: an activation is dormant when its magnitude is below this.
        log: send each layer's mean, std and dormant fraction to the Lightning logger.
        plot: draw the three PNGs when fitting ends.
        plot_dir: where the PNGs go; default the run's log folder.
    """

    def __init__(self, modules: list[str] | None = None, text_layers: bool = False, every_n_steps: int = 1,
                 max_records: int = 500, bins: int = 40, hist_range: tuple[float, float] = (1e-3, 1e3),
                 dormant_below: float = 0.25, log: bool = True,
                 plot: bool = True, plot_dir: str | None = None) -> None:
        self.patterns = modules
        self.text_layers = text_layers
        self.every_n_steps = every_n_steps
        self.max_records = max_records
        if not 0 < hist_range[0] < hist_range[1]:
            raise ValueError(f"ActivationStats: hist_range must be two magnitudes 0 < low < high, got {hist_range}")
        self.bins, self.hist_range, self.dormant_below = bins, tuple(hist_range), dormant_below
        self.log = log
        self.plot, self.plot_dir = plot, plot_dir
        self.layers: dict[str, LayerStats] = {}
        self._handles: list[RemovableHandle] = []
        self._recording = False
        self._step = 0

    # ------------------------------------------------------------------------------ which layers
    def chosen(self, net: nn.Module) -> dict[str, nn.Module]:
        modules = dict(net.named_modules())
        if self.patterns is not None:
            chosen = {n: m for n, m in modules.items() if any(fnmatch.fnmatchcase(n, p) for p in self.patterns)}
            if not chosen:
                raise ValueError(f"ActivationStats: no module matches {self.patterns}; module paths look like "
                                 f"{[n for n in modules if n][:8]}")
            return chosen
        chosen = {n: m for n, m in modules.items()
                  if n.split(".")[0] in DEFAULT_PARTS and isinstance(m, (nn.Linear, *ACTIVATIONS))}
        if self.text_layers and getattr(net, "text", None) is not None:
            chosen.update({f"text.encoder.{name}": m for name, m in encoder_blocks(net.text.encoder).items()})
        return chosen

    # -------------------------------------------------------------------------------- hooks
    def attach(self, net: nn.Module) -> None:
        self.detach()
        for name, module in self.chosen(net).items():
            self.layers.setdefault(name, LayerStats())
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str):  # noqa: ANN202 -- a forward hook
        def record(module: nn.Module, inputs: Any, output: Any) -> None:
            if not self._recording:
                return
            out = output[0] if isinstance(output, tuple) else output  # transformer layers return tuples
            layer = self.layers[name]
            layer.steps.append(self._step)
            layer.stats.append(layer_statistics(out, self.bins, self.hist_range, self.dormant_below))
        return record

    # ------------------------------------------------------------------------ Lightning hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.attach(pl_module.net)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._step = trainer.global_step
        self._recording = (not trainer.sanity_checking and pl_module.training
                           and trainer.global_step % self.every_n_steps == 0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._recording:
            self._recording = False
            self._thin()
            if self.log and trainer.loggers:
                metrics = {}
                for name, layer in self.layers.items():
                    if layer.steps and layer.steps[-1] == self._step:
                        mean, std, dormant = layer.stats[-1][:3].tolist()
                        metrics.update({f"act/{name}/mean": mean, f"act/{name}/std": std,
                                        f"act/{name}/dormant": dormant})
                for logger in trainer.loggers:
                    logger.log_metrics(metrics, step=self._step)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.detach()
        if self.plot and trainer.is_global_zero and any(layer.steps for layer in self.layers.values()):
            from mmtab.diagnostics.plots import plot_activation_stats

            folder = Path(self.plot_dir or trainer.log_dir or trainer.default_root_dir)
            plot_activation_stats(self, folder)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._recording = False
        self.detach()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._recording = False
        self.detach()

    def _thin(self) -> None:
        """Past `max_records`, keep every other record of every layer and record half as often."""
        if any(len(layer.steps) > self.max_records for layer in self.layers.values()):
            for layer in self.layers.values():
                layer.steps, layer.stats = layer.steps[::2], layer.stats[::2]
            self.every_n_steps *= 2
