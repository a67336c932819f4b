import torch
import torch.nn.functional as F

from mmtab.tasks import get_task
from mmtab.training.losses import loss_weights, weighted_mean

from .conftest import adult_datamodule, tabular_module


def grads_of(module, batch) -> dict[str, torch.Tensor]:
    module.zero_grad()
    _, losses, weights = module.per_sample_losses(batch)
    weighted_mean(losses, weights).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters()}


def eval_module(adult_sample):
    """BatchNorm in eval mode: in train mode a duplicated row would change the batch statistics."""
    dm = adult_datamodule(adult_sample)
    module = tabular_module(dm)
    module.eval()
    return module, dm.table("train")[torch.arange(64)]


def test_a_duplicated_row_equals_weight_two(adult_sample):
    module, batch = eval_module(adult_sample)
    dup = {k: torch.cat([v, v[:1]]) for k, v in batch.items()}
    dup["weight"] = torch.ones(65)
    weighted = {**batch, "weight": torch.ones(64).index_fill(0, torch.tensor([0]), 2.0)}
    a, b = grads_of(module, dup), grads_of(module, weighted)
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_zero_weight_rows_have_no_effect(adult_sample):
    module, batch = eval_module(adult_sample)
    extra = {k: torch.cat([v, v[:10].flip(0)]) for k, v in batch.items()}
    extra["target"][64:] = 1 - extra["target"][64:]  # rows that would pull the model the other way
    extra["weight"] = torch.cat([torch.ones(64), torch.zeros(10)])
    a, b = grads_of(module, {**batch, "weight": torch.ones(64)}), grads_of(module, extra)
    for name in a:
        torch.testing.assert_close(a[name], b[name], msg=name)


def test_class_weights_equal_pytorch_weighted_cross_entropy():
    logits, target = torch.randn(50, 3), torch.randint(0, 3, (50,))
    cw = torch.tensor([0.5, 2.0, 1.0])
    ours = weighted_mean(get_task("multiclass").loss(logits, target), loss_weights(target, None, cw))
    torch.testing.assert_close(ours, F.cross_entropy(logits, target, weight=cw))


def test_exact_weighted_mean_and_an_all_zero_batch():
    losses, w = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 3.0])
    assert weighted_mean(losses, w).item() == (1 * 1 + 3 * 4) / 4
    assert weighted_mean(losses, torch.zeros(3)).item() == 0.0
    assert get_task("regression").loss(torch.tensor([[1.0], [3.0]]), torch.tensor([2.0, 2.0])).tolist() == [1, 1]
