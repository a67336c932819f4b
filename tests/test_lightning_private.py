"""The private Lightning names mmtab reads still mean what they meant (`mmtab.training.lightning_private`)."""

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

from mmtab.training import lightning_private


def test_lightning_still_names_the_running_hook_where_mmtab_reads_it():
    module = pl.LightningModule()
    assert hasattr(module, lightning_private.CURRENT_HOOK), (
        f"Lightning no longer keeps the running hook's name in {lightning_private.CURRENT_HOOK!r}: find its new "
        "name and set CURRENT_HOOK in mmtab/training/lightning_private.py")


def test_lightning_still_keeps_save_distributed_checkpoint_where_mmtab_reads_it():
    name = lightning_private.SAVE_DISTRIBUTED_CHECKPOINT
    for flag in (True, False):
        strategy = ModelParallelStrategy(save_distributed_checkpoint=flag)
        assert getattr(strategy, name, None) is flag, (
            f"ModelParallelStrategy no longer keeps save_distributed_checkpoint in {name!r}: find where it does "
            "and set SAVE_DISTRIBUTED_CHECKPOINT in mmtab/training/lightning_private.py")
        assert lightning_private.saves_distributed_checkpoint(strategy) is flag
    assert not lightning_private.saves_distributed_checkpoint(DDPStrategy())
