"""Gradual unfreezing: a branch starts frozen (``branches: {text: {frozen: true}}``) and this callback
unfreezes it at a given epoch.

Freezing is a state of the branch (see `FusionModel.freeze`), not of the optimizer: the branch's
param group has been in the optimizer from the start with its own learning rate, so unfreezing only
flips ``requires_grad`` and train mode. The frozen set is saved in the model's state dict, so a run
resumed after the unfreeze epoch continues unfrozen. NOTE[DIFF]: Lightning's ``BaseFinetuning``
re-freezes modules on resume and adds param groups as it goes (Lightning issue 21901); this does neither.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info


class BranchUnfreeze(pl.Callback):
    """Unfreeze `branch` at the start of epoch `epoch` (0-based).

    Args:
        branch: the branch's name in the model (``text``, ``tabular``, ``fusion``, ``head``).
        epoch: the first epoch in which the branch trains.
    """

    def __init__(self, branch: str = "text", epoch: int = 1) -> None:
        self.branch = branch
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = pl_module.model
        if trainer.current_epoch >= self.epoch and self.branch in model.frozen:
            model.unfreeze(self.branch)
            rank_zero_info(f"epoch {trainer.current_epoch}: unfroze branch {self.branch!r}")
