"""The LR finder sweeps one scale over every part's rate (ratios kept), with the module's own loss and
frozen parts, and leaves the model and the optimizer exactly as it found them."""

import copy

import pytest
import torch

from mmtab.diagnostics.lr_finder import find_lr

from .conftest import adult_datamodule, fusion_module, reviews_datamodule, tabular_module


def optimizer_with_state(module, dm):
    optimizer = module.build_optimizer()
    for batch in list(dm.train_dataloader())[:3]:  # some Adam state to keep
        _, losses, weights = module.per_sample_losses(batch)
        losses.mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer


def test_the_sweep_keeps_ratios_and_restores_weights_buffers_and_optimizer_bit_identically(adult_sample):
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm, lr=1e-2, parts={"head": {"lr": 1e-3}})
    optimizer = optimizer_with_state(module, dm)
    state = copy.deepcopy(module.state_dict())  # weights and BatchNorm buffers
    opt_state = copy.deepcopy(optimizer.state_dict())
    rng = torch.get_rng_state()
    lrs = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: lrs.append([g["lr"] for g in opt.param_groups]))
    result = find_lr(module, dm.train_dataloader(), optimizer=optimizer, num_steps=40)
    assert len(lrs) == len(result.scales) + result.stopped_early
    assert all(tab / head == pytest.approx(10.0) for tab, head in lrs)  # the configured ratio, every step
    assert lrs[-1][0] > 100 * lrs[0][0]  # it did sweep
    after = module.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in state.items() if isinstance(v, torch.Tensor))
    restored = optimizer.state_dict()
    assert restored["param_groups"] == opt_state["param_groups"]
    assert all(torch.equal(v[n], restored["state"][k][n]) for k, v in opt_state["state"].items() for n in v)
    assert torch.equal(rng, torch.get_rng_state())
    assert result.suggested_lrs["head"] == pytest.approx(result.suggested_lrs["tabular"] / 10)


def test_a_frozen_part_stays_frozen_through_the_sweep(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm, parts={"text": {"frozen": True, "lr": 1e-4}})
    text = {k: v.clone() for k, v in module.net.text.state_dict().items()}
    changed = []

    def check(opt, args, kwargs):  # before every step of the sweep: the frozen encoder has not moved
        changed.extend(k for k, v in module.net.text.state_dict().items() if not torch.equal(v, text[k]))

    optimizer = module.build_optimizer()
    optimizer.register_step_post_hook(check)
    find_lr(module, dm.train_dataloader(), optimizer=optimizer, num_steps=12)
    assert not changed and module.net.frozen == {"text"}
    assert not any(p.requires_grad for p in module.net.text.parameters())
