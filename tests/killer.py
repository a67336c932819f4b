"""Callbacks the resume tests add to a real `mmtab fit` to kill or stop its own process mid-epoch."""

import os
import signal

import lightning.pytorch as pl


class SigkillMidEpoch(pl.Callback):
    """SIGKILL (no cleanup, no checkpoint, nothing flushed) at batch `batch` of epoch `epoch`."""

    def __init__(self, epoch: int = 1, batch: int = 3) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)


class SigtermMidEpoch(SigkillMidEpoch):
    """SIGTERM (what ``kill`` and schedulers send) at batch `batch` of epoch `epoch`."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class RequeuedBySlurm(SigkillMidEpoch):
    """What SLURM does at ``--signal=USR1@S`` with ``--requeue``: SIGUSR1 (Lightning saves an HPC checkpoint and
    calls ``scontrol requeue``), then, as the job is requeued, SIGTERM."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGUSR1)
            os.kill(os.getpid(), signal.SIGTERM)
