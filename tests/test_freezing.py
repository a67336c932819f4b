"""Freezing is a state of the branch: pinned trainable sets, untouched frozen weights, unfreezing
mid-fit without a new optimizer, and a resumed run that is frozen exactly as it was."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from mmtab import Unfreeze

from .conftest import fusion_module, quiet_trainer, reviews_datamodule
from .test_param_groups import LrRecorder, one_cycle


def trainable(module) -> set[str]:
    return {n for n, p in module.net.named_parameters() if p.requires_grad}


def branch_names(module, branch: str) -> set[str]:
    return {f"{branch}.{n}" for n, _ in getattr(module.net, branch).named_parameters()}


@pytest.mark.parametrize("frozen", [[], ["text"], ["tabular"], ["text", "tabular"], ["head"]])
def test_the_exact_trainable_set_for_each_freezing_setup(frozen, tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm, parts={b: {"frozen": True} for b in frozen})
    everything = {n for n, _ in module.net.named_parameters()}
    expected = everything - set().union(*(branch_names(module, b) for b in frozen))
    assert trainable(module) == expected
    for b in frozen:
        assert not getattr(module.net, b).training or not module.net.training


def test_frozen_text_weights_are_bit_identical_after_training(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm, parts={"text": {"frozen": True}})
    before = {k: v.clone() for k, v in module.net.text.state_dict().items()}
    tab_before = module.net.tabular.mlp.blocks[0].linear.weight.detach().clone()
    quiet_trainer(max_steps=4).fit(module, dm)
    assert all(torch.equal(v, module.net.text.state_dict()[k]) for k, v in before.items())
    assert not torch.equal(tab_before, module.net.tabular.mlp.blocks[0].linear.weight)


class EpochProbe(pl.Callback):
    """What the optimizer and the text branch look like at each epoch start (after Unfreeze)."""

    def __init__(self):
        self.optimizer_ids, self.text_trainable, self.text_weight = [], [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.optimizer_ids.append(id(trainer.optimizers[0]))
        self.text_trainable.append(all(p.requires_grad for p in pl_module.net.text.parameters()))
        self.text_weight.append(pl_module.net.text.encoder.embeddings.word_embeddings.weight.detach().clone())


def test_unfreezing_mid_fit_trains_the_branch_with_the_same_optimizer(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm, parts={"text": {"frozen": True, "lr": 1e-3}})
    probe, lrs = EpochProbe(), LrRecorder()
    trainer = quiet_trainer(max_epochs=3, limit_train_batches=6, limit_val_batches=1,
                            callbacks=[Unfreeze("text", epoch=1), probe, lrs])
    trainer.fit(module, dm)
    assert len(set(probe.optimizer_ids)) == 1  # never rebuilt
    assert probe.text_trainable == [False, True, True]
    assert torch.equal(probe.text_weight[0], probe.text_weight[1])  # frozen during epoch 0
    assert not torch.equal(probe.text_weight[1], probe.text_weight[2])  # trained during epoch 1
    names = [g["name"] for g in trainer.optimizers[0].param_groups]
    total = len(lrs.lrs)
    for step, group_lrs in enumerate(lrs.lrs):  # the text group's schedule ran all along
        assert group_lrs[names.index("text")] == pytest.approx(one_cycle(step, total, 1e-3), rel=1e-6)
        assert group_lrs[names.index("tabular")] == pytest.approx(one_cycle(step, total, 3e-3), rel=1e-6)


def test_a_run_resumed_after_the_unfreeze_epoch_keeps_its_trainable_set_and_groups(tiny_bert, reviews_sample,
                                                                                   tmp_path):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    config = {"parts": {"text": {"frozen": True, "lr": 1e-3}}}
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = fusion_module(dm, **config)

    class StopAfterEpoch1(pl.Callback):  # the run is interrupted after the unfreeze epoch
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = trainer.current_epoch >= 1

    trainer = quiet_trainer(max_epochs=3, limit_train_batches=4, limit_val_batches=1, enable_checkpointing=True,
                            callbacks=[Unfreeze("text", epoch=1), StopAfterEpoch1(), ckpt])
    trainer.fit(first, dm)
    groups_before = [(g["name"], len(g["params"]), g["weight_decay"]) for g in trainer.optimizers[0].param_groups]
    lr_before = [g["lr"] for g in trainer.optimizers[0].param_groups]

    class AtResume(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.trainable = trainable(pl_module)
            self.groups = [(g["name"], len(g["params"]), g["weight_decay"]) for g in trainer.optimizers[0].param_groups]
            self.lrs = [g["lr"] for g in trainer.optimizers[0].param_groups]

    probe = AtResume()
    resumed = fusion_module(dm, **config)  # built frozen, as the config says
    assert "text.no_text" not in trainable(resumed)
    resumed_trainer = quiet_trainer(max_epochs=3, limit_train_batches=4, limit_val_batches=1,
                                    callbacks=[Unfreeze("text", epoch=1), probe])
    resumed_trainer.fit(resumed, dm, ckpt_path=str(tmp_path / "last.ckpt"))
    assert trainer.current_epoch == 2 and resumed_trainer.current_epoch == 3
    assert probe.trainable == trainable(first) == {n for n, _ in first.net.named_parameters()}
    assert probe.groups == groups_before
    assert probe.lrs == pytest.approx(lr_before)
