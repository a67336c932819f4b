import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from mmtab import PartHparams, TabularMLP, build_param_groups, format_param_groups
from mmtab.training.param_groups import ParamGroupError, check_optimizer

from .conftest import adult_datamodule, quiet_trainer, tabular_module


def test_one_group_per_branch_with_its_own_hparams(adult_sample):
    module = tabular_module(adult_datamodule(adult_sample))
    groups = build_param_groups(module.net, {"head": PartHparams(lr=1e-3, weight_decay=0.0)}, lr=1e-2,
                                weight_decay=0.1)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in groups] == [("tabular", 1e-2, 0.1), ("head", 1e-3, 0.0)]
    table = format_param_groups(torch.optim.AdamW(groups))
    assert "tabular" in table and "head" in table and "weight_decay" in table


def test_unknown_branch_and_stray_parameters_are_named(adult_sample):
    module = tabular_module(adult_datamodule(adult_sample))
    with pytest.raises(ParamGroupError, match=r"parts \['txt'\] are not in the model"):
        build_param_groups(module.net, {"txt": PartHparams(lr=1.0)}, lr=1e-3, weight_decay=0.0)
    module.net.temperature = nn.Parameter(torch.ones(1))  # a parameter outside every branch
    with pytest.raises(ParamGroupError, match=r"parameters in no group: \['temperature'\]"):
        build_param_groups(module.net, {}, lr=1e-3, weight_decay=0.0)


def test_replacing_a_branch_and_fitting_again_trains_the_new_one(adult_sample):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm)
    quiet_trainer(max_steps=3).fit(module, dm)
    old = list(module.net.tabular.parameters())
    module.net.tabular = TabularMLP(**dm.tabular_dims, layers=[32, 16])
    new_before = {n: p.detach().clone() for n, p in module.net.tabular.named_parameters()}
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(module, dm)
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in old}
    changed = [n for n, p in module.net.tabular.named_parameters() if not torch.equal(p, new_before[n])]
    assert "mlp.blocks.0.linear.weight" in changed and len(changed) == len(new_before)


def test_a_stale_optimizer_is_detected(adult_sample):
    module = tabular_module(adult_datamodule(adult_sample))
    optimizer = torch.optim.AdamW(build_param_groups(module.net, {}, lr=1e-3, weight_decay=0.0))
    module.net.tabular = TabularMLP(cardinalities=[3], n_cont=2, layers=[4])
    with pytest.raises(ParamGroupError, match="not in the model"):
        check_optimizer(module.net, optimizer)


class LrRecorder(pl.Callback):
    def __init__(self):
        self.lrs: list[list[float]] = []
        self.betas: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        groups = trainer.optimizers[0].param_groups
        self.lrs.append([g["lr"] for g in groups])
        self.betas.append(groups[0]["betas"][0])


def one_cycle(step: int, total: int, peak: float, pct=0.25, div=25.0, div_final=1e5) -> float:
    """fastai's schedule, written independently: cosine from peak/div up to peak, then down to peak/div_final."""
    import math

    def cos(a, b, t):
        return b + (a - b) / 2 * (1 + math.cos(math.pi * t))

    warm = pct * total - 1  # the peak is reached at this step; the last step (total - 1) ends the cycle
    if step <= warm:
        return cos(peak / div, peak, step / warm)
    return cos(peak, peak / div_final, (step - warm) / (total - 1 - warm))


def test_each_groups_lr_follows_the_one_cycle_schedule_at_every_step(adult_sample):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm, parts={"head": {"lr": 1e-3}})
    recorder = LrRecorder()
    trainer = quiet_trainer(max_epochs=2, callbacks=[recorder])
    trainer.fit(module, dm)
    total = len(recorder.lrs)
    assert total == trainer.estimated_stepping_batches == 2 * -(-3200 // 256)
    for step, (tab_lr, head_lr) in enumerate(recorder.lrs):
        assert tab_lr == pytest.approx(one_cycle(step, total, 1e-2), rel=1e-6), step
        assert head_lr == pytest.approx(one_cycle(step, total, 1e-3), rel=1e-6), step
    assert recorder.betas[0] == pytest.approx(0.95) and min(recorder.betas) == pytest.approx(0.85, abs=1e-3)
