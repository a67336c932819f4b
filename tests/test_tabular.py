import pytest
import torch

from mmtab import FusionModel, TabularMLP, embedding_size
from mmtab.models import tabular as tabular_module


def per_column(model: TabularMLP, cat: torch.Tensor) -> torch.Tensor:
    return torch.cat([emb(cat[:, i]) for i, emb in enumerate(model.embeddings)], dim=1)


@pytest.mark.parametrize("one_hot_max_rows", [0, 1024], ids=["embedding_bag", "one_hot"])
def test_one_lookup_equals_per_column_lookups_and_their_gradients(monkeypatch, one_hot_max_rows):
    monkeypatch.setattr(tabular_module, "_ONE_HOT_MAX_ROWS", one_hot_max_rows)
    torch.manual_seed(0)
    cards = [3, 17, 42, 5]
    model = TabularMLP(cardinalities=cards, n_cont=0, layers=[8])
    for emb in model.embeddings:
        torch.nn.init.normal_(emb.weight)
    cat = torch.stack([torch.randint(0, c, (64,)) for c in cards], dim=1)
    fused = model.embed(cat)
    torch.testing.assert_close(fused, per_column(model, cat))
    upstream = torch.randn_like(fused)
    fused_grads = torch.autograd.grad((fused * upstream).sum(), [e.weight for e in model.embeddings])
    ref_grads = torch.autograd.grad((per_column(model, cat) * upstream).sum(), [e.weight for e in model.embeddings])
    for got, want in zip(fused_grads, ref_grads):
        torch.testing.assert_close(got, want)


def test_widths_block_order_and_names():
    model = TabularMLP(cardinalities=[10, 43], n_cont=6, layers=[200, 100], dropout=[0.1, 0.0])
    assert [e.embedding_dim for e in model.embeddings] == [embedding_size(10), embedding_size(43)] == [6, 13]
    assert model.out_features == 100
    block = model.mlp.blocks[0]
    assert [name for name, _ in block.named_children()] == ["linear", "act", "bn", "drop"]  # fastai's order
    assert block.linear.bias is None  # BatchNorm follows
    assert not hasattr(model.mlp.blocks[1], "drop")
    assert "mlp.blocks.1.linear.weight" in dict(model.named_parameters())


def test_continuous_only_and_categorical_only():
    x = TabularMLP(cardinalities=[], n_cont=3, layers=[4])(torch.zeros(2, 0, dtype=torch.long), torch.randn(2, 3))
    y = TabularMLP(cardinalities=[5], n_cont=0, layers=[4])(torch.tensor([[1], [2]]), torch.zeros(2, 0))
    assert x.shape == y.shape == (2, 4)
    with pytest.raises(ValueError, match="at least one categorical or continuous"):
        TabularMLP(cardinalities=[], n_cont=0)


def test_matches_fastai_tabular_model_given_the_same_weights():
    """Functional parity: fastai's TabularModel with our weights computes what our model computes."""
    fastai_tabular = pytest.importorskip("fastai.tabular.model")
    torch.manual_seed(0)
    cards, n_cont = [10, 17, 43], 4
    ours = FusionModel(n_outputs=2, tabular=TabularMLP(cardinalities=cards, n_cont=n_cont, layers=[200, 100]))
    theirs = fastai_tabular.TabularModel([(c, embedding_size(c)) for c in cards], n_cont, 2, layers=[200, 100])
    mine = [p for n, p in ours.named_parameters()] + [b for n, b in ours.named_buffers() if "offsets" not in n]
    assert len(mine) == len(list(theirs.parameters()) + list(theirs.buffers()))
    with torch.no_grad():
        for dst, src in zip(list(theirs.parameters()) + list(theirs.buffers()), mine):
            dst.copy_(src)
    cat = torch.stack([torch.randint(0, c, (32,)) for c in cards], dim=1)
    cont = torch.randn(32, n_cont)
    for mode in (True, False):
        ours.train(mode), theirs.train(mode)
        torch.testing.assert_close(ours({"cat": cat, "cont": cont}), theirs(cat, cont))
