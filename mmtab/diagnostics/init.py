"""Initialisation as an explicit, named step: ``kaiming`` and ``lsuv`` per part, chosen in the config.

PyTorch's default `nn.Linear` init is ``kaiming_uniform_(a=sqrt(5))``: weight std 1/sqrt(3·fan_in),
about 0.41 of He's sqrt(2/fan_in) for a ReLU, so activations shrink layer after layer in a deep net
without BatchNorm. ``kaiming`` gives every Linear that feeds a ReLU-like activation He's normal
init (zero bias); the output layer and the fusion projections keep theirs. ``lsuv`` is data-driven,
on training batches only: for each Linear+activation pair in forward order, shift the bias until
the activation's output has mean ~0 (only where the activation can reach 0 mean: a plain ReLU's
output is never negative, so there the bias is left alone), then rescale the weight until the
output's std is ~1, within a tolerance and a maximum number of iterations.

Both run once, before the first optimizer step, never on a run resumed from a checkpoint (its
weights win) and never on the pretrained text encoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from mmtab.errors import ConfigError
from mmtab.models.blocks import LinBnDrop

InitName = Literal["default", "kaiming", "lsuv"]


def relu_pairs(module: nn.Module) -> dict[str, tuple[nn.Linear, nn.Module]]:
    """Each Linear that feeds an activation, by its block's path: the blocks of the MLPs."""
    return {name: (block.linear, block.act) for name, block in module.named_modules() if isinstance(block, LinBnDrop)}


def _leak(act: nn.Module) -> float:
    return float(getattr(act, "leak", 0.0) or getattr(act, "negative_slope", 0.0) or 0.0)


@torch.no_grad()
def kaiming_init(module: nn.Module) -> list[str]:
    """He normal init (fan-in, the activation's leak as `a`) and zero bias for each Linear feeding an
    activation; returns the blocks changed."""
    for linear, act in relu_pairs(module).values():
        leak = _leak(act)
        nn.init.kaiming_normal_(linear.weight, a=leak, nonlinearity="leaky_relu" if leak else "relu")
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)
    return list(relu_pairs(module))


@dataclass
class LsuvLayer:
    """One layer's activation statistics before and after LSUV."""

    name: str
    mean_before: float
    std_before: float
    mean_after: float
    std_after: float
    iterations: int
    centred: bool


def can_reach_zero_mean(act: nn.Module) -> bool:
    """Whether the activation's output can be negative (a plain ReLU's cannot)."""
    with torch.no_grad():
        return bool(act(torch.tensor([-1.0, -0.1, 0.0])).min() < 0)


@torch.no_grad()
def lsuv_init(net: nn.Module, parts: Iterable[str], batches: list[Mapping[str, Tensor]], *, tolerance: float = 0.05,
              max_iterations: int = 20) -> list[LsuvLayer]:
    """LSUV on the given parts of `net`, measured on `batches` (training batches) in eval mode, so
    that dropout and BatchNorm's batch statistics do not move the target; the net's mode is restored."""
    pairs = {f"{part}.{name}": pair for part in parts for name, pair in relu_pairs(getattr(net, part)).items()}
    was_training = net.training
    net.eval()
    report = []
    try:
        for name, (linear, act) in pairs.items():
            centre = linear.bias is not None and can_reach_zero_mean(act)
            mean, std = before = activation_mean_std(net, act, batches)
            steps = 0
            while steps < max_iterations and ((centre and abs(mean) > tolerance) or abs(std - 1) > tolerance):
                if centre and abs(mean) > tolerance:
                    linear.bias -= mean
                elif std > 0:
                    linear.weight /= std
                mean, std = activation_mean_std(net, act, batches)
                steps += 1
            report.append(LsuvLayer(name, *before, mean, std, steps, centre))
    finally:
        net.train(was_training)
    return report


@torch.no_grad()
def activation_mean_std(net: nn.Module, act: nn.Module, batches: list[Mapping[str, Tensor]]) -> tuple[float, float]:
    """Mean and std of `act`'s output over `batches`, as `net` is now."""
    captured: list[Tensor] = []
    handle = act.register_forward_hook(lambda module, inputs, out: captured.append(out.detach().float().flatten()))
    try:
        for batch in batches:
            net(batch)
    finally:
        handle.remove()
    out = torch.cat(captured)
    return float(out.mean()), float(out.std())


def format_lsuv(report: list[LsuvLayer]) -> str:
    rows = [("layer", "mean before", "std before", "mean after", "std after", "iterations")]
    rows += [(r.name, f"{r.mean_before:.3f}", f"{r.std_before:.3f}",
              f"{r.mean_after:.3f}" + ("" if r.centred else " (ReLU: not centred)"), f"{r.std_after:.3f}",
              str(r.iterations)) for r in report]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


class Initialize(pl.Callback):
    """Initialise parts of the model before the first step: ``parts: {tabular: lsuv, head: kaiming}``.

    Args:
        parts: an initialisation per part (``default`` leaves PyTorch's). The text branch is
            pretrained and cannot be named here.
        lsuv_batches: training batches LSUV measures on.
        lsuv_tolerance: how close to mean 0 and std 1 LSUV brings each layer's output.
        lsuv_max_iterations: LSUV's iterations per layer at most.
    """

    def __init__(self, parts: dict[str, InitName], lsuv_batches: int = 2, lsuv_tolerance: float = 0.05,
                 lsuv_max_iterations: int = 20) -> None:
        if "text" in parts:
            raise ConfigError("Initialize: the text branch is a pretrained encoder; initialising it would throw its "
                              "weights away: leave 'text' out of parts")
        self.parts = dict(parts)
        self.lsuv_batches, self.lsuv_tolerance, self.lsuv_max_iterations = (lsuv_batches, lsuv_tolerance,
                                                                             lsuv_max_iterations)
        self.report: list[LsuvLayer] = []
        self.applied = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_train_start runs after a checkpoint is restored and before the first optimizer step
        if trainer.ckpt_path is not None:
            rank_zero_info(f"Initialize: resumed from {trainer.ckpt_path}; its weights are kept, nothing initialised")
            return
        net = pl_module.net
        unknown = sorted(set(self.parts) - set(net.parts()))
        if unknown:
            raise ConfigError(f"Initialize names parts {unknown} that the model does not have; its parts are "
                              f"{sorted(net.parts())}")
        for part, how in self.parts.items():
            if how == "kaiming":
                changed = kaiming_init(getattr(net, part))
                rank_zero_info(f"kaiming init of {part}: {', '.join(f'{part}.{c}' for c in changed) or 'no blocks'}")
        lsuv = [part for part, how in self.parts.items() if how == "lsuv"]
        if lsuv:
            self.report = lsuv_init(net, lsuv, self._training_batches(trainer, pl_module),
                                    tolerance=self.lsuv_tolerance, max_iterations=self.lsuv_max_iterations)
            rank_zero_info("LSUV init (activation mean and std on training batches):\n" + format_lsuv(self.report))
        self.applied = True

    def _training_batches(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[dict[str, Any]]:
        loader = trainer.datamodule.train_dataloader()
        batches = []
        for batch in loader:
            batches.append({k: v.to(pl_module.device) for k, v in batch.items()})
            if len(batches) == self.lsuv_batches:
                break
        return batches
