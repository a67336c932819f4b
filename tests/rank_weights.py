"""A callback the DDP test adds to a real `mmtab fit`: each process saves its own weights at the end,
so the test can check that the processes' replicas never drifted apart."""

from pathlib import Path

import lightning.pytorch as pl
import torch


class SaveEachRanksWeights(pl.Callback):
    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_fit_end(self, trainer, pl_module) -> None:
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.net.state_dict(), Path(self.folder) / f"rank{trainer.global_rank}.pt")


class SaveEachRanksShare(pl.Callback):
    """How many of the text branch's weights each process holds (its shard, under FSDP)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        from torch.distributed.tensor import DTensor

        local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in pl_module.net.text.parameters())
        whole = sum(p.numel() for p in pl_module.net.text.parameters())
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        (Path(self.folder) / f"rank{trainer.global_rank}.txt").write_text(f"{local} {whole}")
