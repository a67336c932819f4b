"""The one-cycle schedule, with fastai's defaults and fastai's meaning of each number."""

from __future__ import annotations

from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR

from mmtab.errors import ConfigError


@dataclass
class OneCycle:
    """One-cycle learning rate (and momentum) per param group, stepped every batch.

    Args:
        pct_start: share of the steps spent warming up.
        div: the warm-up starts at ``lr / div``.
        div_final: the run ends at ``lr / div_final``. NOTE[DIFF]: fastai's meaning (relative to the
            peak); PyTorch's ``final_div_factor`` is relative to the start, so it gets ``div_final / div``.
        max_momentum: momentum (Adam's beta1) at the start and end of the cycle.
        base_momentum: momentum at the peak learning rate.
    """

    pct_start: float = 0.25
    div: float = 25.0
    div_final: float = 1e5
    max_momentum: float = 0.95
    base_momentum: float = 0.85

    def build(self, optimizer: Optimizer, total_steps: int) -> OneCycleLR:
        # PyTorch divides by the warm-up's length in steps, which must not be 0: a run of a few steps
        # (a smoke test, `max_steps=4`) gets a warm-up of at least 1.5 steps instead of an error.
        total_steps = _cycle_steps(total_steps)
        pct_start = min(max(self.pct_start, 1.5 / total_steps), 0.5)
        return OneCycleLR(
            optimizer,
            max_lr=[g["lr"] for g in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=pct_start,
            anneal_strategy="cos",
            div_factor=self.div,
            final_div_factor=self.div_final / self.div,
            cycle_momentum=True,
            base_momentum=self.base_momentum,
            max_momentum=self.max_momentum,
        )


def check_resumed_schedule(scheduler: object, total_steps: int) -> None:
    """A one-cycle schedule restored from a checkpoint spans the steps of the run that wrote it; a
    resumed run with more steps (a larger ``max_epochs``, say) would step past its end mid-epoch."""
    if isinstance(scheduler, OneCycleLR) and scheduler.total_steps != _cycle_steps(total_steps):
        raise ConfigError(f"the checkpoint's one-cycle schedule spans {scheduler.total_steps} steps and this run "
                          f"has {total_steps}: a cycle cannot be stretched once it has begun. Resume with the "
                          "trainer.max_epochs (or max_steps) and data.batch_size of the run that wrote it; to train "
                          "longer, fit again with more epochs")


def _cycle_steps(total_steps: int) -> int:
    return max(total_steps, 3)
