"""``threads``: the thread policy of `mmtab.threads` as a Lightning callback, so every subcommand's
processes size their intra-op pool from the cores free, and a config or ``--threads.count N`` fixes it."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from mmtab.threads import ThreadPolicy


class Threads(pl.Callback):
    """Sizes each process's intra-op threads for the run, and restores PyTorch's count after it.

    Args:
        count: a fixed number of intra-op threads per process; ``null`` takes the process's share of
            the cores less those other processes keep busy, looked at again every few seconds
            (`mmtab.threads`). ``OMP_NUM_THREADS`` fixes it too.
    """

    def __init__(self, count: int | None = None) -> None:
        self.count = count
        ThreadPolicy(count)  # a wrong count is refused as the config is read, not when a stage starts
        self.policy: ThreadPolicy | None = None
        self._before = torch.get_num_threads()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._before = torch.get_num_threads()
        self.policy = ThreadPolicy(self.count, processes=trainer.num_devices)  # DDP: the node's processes
        self.policy.activate()  # before the stage's text embeddings are computed
        if stage == "fit":
            rank_zero_info(self.policy.describe())

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.policy is not None:
            self.policy.deactivate(self._before)

    def state_dict(self) -> dict[str, Any]:
        """What the checkpoint says of the threads (a resume is bit-exact with the same count)."""
        policy = self.policy
        return {} if policy is None else {"threads": policy.current, "fixed": policy.fixed is not None,
                                          "changes": policy.changes}

    def _recheck(self) -> None:
        if self.policy is not None:
            self.policy.recheck()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._recheck()

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._recheck()

    def on_test_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                            batch_idx: int, dataloader_idx: int = 0) -> None:
        self._recheck()

    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                               batch_idx: int, dataloader_idx: int = 0) -> None:
        self._recheck()
