"""An LR finder that keeps the ratios between the parts' learning rates.

Lightning's tuner (and most finders) set one learning rate on every param group, which throws away
a config's per-part rates (say the encoder at 1e-4 beside a head at 3e-3). This one sweeps a single
scale factor over all groups exponentially: group g trains at ``scale * lr_g``. It uses the module's
own weighted loss and frozen parts, stops when the smoothed loss diverges, and restores the model's
weights, buffers, frozen set and the random state exactly afterwards (the optimizer it sweeps with is
its own, or, if one is given, restored to the state it had).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from torch.optim import Optimizer

from mmtab.training.losses import weighted_mean


@dataclass
class LrFinderResult:
    """What the sweep saw, and its suggestion."""

    scales: list[float]
    losses: list[float]  # smoothed
    group_lrs: dict[str, float]  # each part's configured peak lr
    suggested_scale: float
    stopped_early: bool
    suggested_lrs: dict[str, float] = field(init=False)

    def __post_init__(self) -> None:
        self.suggested_lrs = {name: lr * self.suggested_scale for name, lr in self.group_lrs.items()}

    def summary(self) -> str:
        lines = [f"suggested scale {self.suggested_scale:.3g} of the configured rates "
                 f"(the lowest smoothed loss, divided by 10){'; stopped when the loss diverged' * self.stopped_early}"]
        lines += [f"  {name}: lr {lr:.3g} (configured {self.group_lrs[name]:.3g})"
                  for name, lr in self.suggested_lrs.items()]
        return "\n".join(lines)


def _cycle(batches: Iterable[Mapping[str, Tensor]]) -> Iterator[Mapping[str, Tensor]]:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the LR finder got no training batches")


def find_lr(module, batches: Iterable[Mapping[str, Tensor]], *, optimizer: Optimizer | None = None,  # noqa: ANN001
            min_scale: float = 1e-4, max_scale: float = 1000.0, num_steps: int = 100, smoothing: float = 0.98,
            diverge: float = 4.0) -> LrFinderResult:
    """Sweep `scale` from `min_scale` to `max_scale` over `num_steps` training steps of a
    `MultimodalModule` on `batches` (cycled), every group at ``scale * its lr``; then restore."""
    device = next(module.parameters()).device
    saved_state = copy.deepcopy(module.state_dict())  # weights, buffers (BatchNorm), the frozen set
    saved_rng = torch.get_rng_state()
    saved_optimizer = copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None
    was_training = module.training
    if optimizer is None:
        optimizer = module.build_optimizer()
    base = [g.get("max_lr", g["lr"]) for g in optimizer.param_groups]
    names = [g.get("name", str(i)) for i, g in enumerate(optimizer.param_groups)]
    scales = np.geomspace(min_scale, max_scale, num_steps).tolist()
    seen, smoothed, best, stopped = [], [], float("inf"), False
    average = 0.0
    module.train()
    try:
        for step, (scale, batch) in enumerate(zip(scales, _cycle(batches))):
            for group, lr in zip(optimizer.param_groups, base):
                group["lr"] = lr * scale
            batch = {k: v.to(device) for k, v in batch.items()}
            _, losses, weights = module.per_sample_losses(batch)
            loss = weighted_mean(losses, weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not np.isfinite(value):
                stopped = True
                break
            average = smoothing * average + (1 - smoothing) * value
            smooth = average / (1 - smoothing ** (step + 1))  # bias-corrected
            seen.append(scale)
            smoothed.append(smooth)
            best = min(best, smooth)
            if step > 5 and smooth > diverge * best:
                stopped = True
                break
    finally:
        module.load_state_dict(saved_state)
        torch.set_rng_state(saved_rng)
        optimizer.zero_grad(set_to_none=True)
        if saved_optimizer is not None:
            optimizer.load_state_dict(saved_optimizer)
        module.train(was_training)
    lowest = seen[int(np.argmin(smoothed))] if seen else min_scale
    return LrFinderResult(seen, smoothed, dict(zip(names, base)), lowest / 10, stopped)
