"""Gradual unfreezing: a part starts frozen (``parts: {text: {frozen: true}}``) and this callback
unfreezes it at a given epoch.

Freezing is the model's state (`FusionModel.freeze`, `FusionModel.frozen`), not the optimizer's: the
part's param group has been in the optimizer from the start with its own learning rate, so
unfreezing only flips ``requires_grad`` and train mode. The frozen set is saved in the model's state
dict, so a run resumed after the unfreeze epoch continues unfrozen. NOTE[DIFF]: Lightning's
``BaseFinetuning`` re-freezes modules on resume and adds param groups as it goes (Lightning issue
21901); this does neither.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info


class Unfreeze(pl.Callback):
    """Unfreeze `part` at the start of epoch `epoch` (0-based).

    Args:
        part: the part's name in the model (``text``, ``tabular``, ``fusion``, ``head``).
        epoch: the first epoch in which the part trains.
    """

    def __init__(self, part: str = "text", epoch: int = 1) -> None:
        self.part = part
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = pl_module.net
        if trainer.current_epoch >= self.epoch and self.part in net.frozen:
            net.unfreeze(self.part)
            rates = [f"lr {g.get('max_lr', g['lr']):.3g}, weight_decay {g['weight_decay']:.3g}"
                     for optimizer in trainer.optimizers for g in optimizer.param_groups if g.get("name") == self.part]
            said = f" ({rates[0]})" if rates else ""
            rank_zero_info(f"epoch {trainer.current_epoch}: unfroze {self.part!r}{said}")
