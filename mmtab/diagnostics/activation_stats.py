"""`ActivationStats`: what each layer's activations look like as training goes, from training steps only.

A Lightning callback that attaches forward hooks when fitting starts and removes them when it ends
(or fails). It records only inside training batches: a validation, sanity-check, test or predict
pass never reaches the record, so evaluation batches cannot show up as false periodic spikes.
Per chosen layer it keeps the mean, the standard deviation, a histogram of |activation| over a fixed
range and the dormant fraction (the share in the histogram's first bin). The statistics stay on the
device until they are read; memory is bounded by thinning the kept steps when they pass
`max_records`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from mmtab.models.blocks import GeneralRelu

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


def layer_statistics(output: Tensor, bins: int, hist_max: float) -> Tensor:
    """(3 + bins,): mean, std, dormant fraction, and the share of |activation| in each of `bins` equal bins
    over [0, hist_max] (larger values counted in the last bin)."""
    x = output.detach().float()
    hist = torch.histc(x.abs().clamp_max(hist_max), bins=bins, min=0.0, max=hist_max)
    hist = hist / max(x.numel(), 1)
    return torch.cat([torch.stack([x.mean(), x.std() if x.numel() > 1 else x.new_zeros(()), hist[0]]), hist])


class ActivationStats(pl.Callback):
    """Record activation statistics of chosen layers in training steps.

    Args:
        modules: module paths inside the model (``tabular.mlp.blocks.0.act``), glob patterns allowed
            (``head.*``). Default: every Linear and activation of the tabular branch, the fusion
            layer and the head.
        text_layers: also record the text encoder's layer outputs (its transformer blocks).
        every_n_steps: record every this many training steps.
        max_records: keep at most this many records per layer; beyond it every other record is
            dropped and the interval doubles, so a long run keeps a bounded, even sample.
        bins: histogram bins over [0, hist_max].
        hist_max: the histogram's range of |activation|; larger values land in the last bin.
        log: send each layer's mean, std and dormant fraction to the Lightning logger.
        plot: draw the three PNGs when fitting ends.
        plot_dir: where the PNGs go; default the run's log folder.
    """

    def __init__(self, modules: list[str] | None = None, text_layers: bool = False, every_n_steps: int = 1,
                 max_records: int = 500, bins: int = 40, hist_max: float = 10.0, log: bool = True,
                 plot: bool = True, plot_dir: str | None = None) -> None:
        self.patterns = modules
        self.text_layers = text_layers
        self.every_n_steps = every_n_steps
        self.max_records = max_records
        self.bins, self.hist_max = bins, hist_max
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
            layer_list = _transformer_layers(net.text.encoder)
            chosen.update({f"text.encoder.{name}": m for name, m in layer_list.items()})
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
            layer.stats.append(layer_statistics(out, self.bins, self.hist_max))
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


def _transformer_layers(encoder: nn.Module) -> dict[str, nn.Module]:
    """The blocks of a Hugging Face encoder (``encoder.layer.N`` in BERT-style models)."""
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and name.endswith("layer"):
            return {f"{name}.{i}": block for i, block in enumerate(module)}
    return {}
