import numpy as np
import pytest
import torch

from mmtab import (
    AttentionFusion,
    ConcatFusion,
    FusionModel,
    GatedFusion,
    MultimodalModule,
    TabularMLP,
    TabularTextDataModule,
    TextEncoder,
)
from mmtab.errors import ConfigError

from .conftest import REVIEW_CAT, REVIEW_TEXT, fusion_module, quiet_trainer, reviews_datamodule

FUSIONS = [ConcatFusion, GatedFusion, AttentionFusion]


@pytest.mark.parametrize("fusion", FUSIONS, ids=lambda f: f.__name__)
def test_fusion_classes_share_one_interface(fusion):
    layer = fusion({"tabular": 12, "text": 32})
    out = layer({"tabular": torch.randn(5, 12), "text": torch.randn(5, 32)})
    assert out.shape == (5, layer.out_features)


def test_branches_on_different_scales_reach_the_head_on_one_scale():
    # a BatchNorm-ended tabular branch next to a small-spread text embedding (MiniLM's is ~0.13 per unit)
    features = {"tabular": torch.randn(64, 12) * 3 + 1, "text": torch.randn(64, 32) * 0.13}
    out = ConcatFusion({"tabular": 12, "text": 32})(features)
    tabular, text = out[:, :12], out[:, 12:]
    for part in (tabular, text):
        torch.testing.assert_close(part.std(dim=1), torch.ones(64), atol=0.05, rtol=0)
    unnormalized = ConcatFusion({"tabular": 12, "text": 32}, normalize=False)(features)
    assert unnormalized[:, :12].std() > 10 * unnormalized[:, 12:].std()


def test_one_branch_gets_no_normalization_so_tabular_only_stays_fastai():
    for fusion in FUSIONS:
        assert not list(fusion({"tabular": 12}).norm.parameters())
    tab = TabularMLP(cardinalities=[4], n_cont=1, layers=[24])
    assert not list(FusionModel(n_outputs=2, tabular=tab).fusion.parameters())


@pytest.mark.parametrize("fusion", FUSIONS, ids=lambda f: f.__name__)
def test_every_trainable_parameter_gets_a_gradient(fusion, tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm, fusion=fusion)
    module.train()
    batch = next(b for b in dm.train_dataloader() if b["has_text"].sum() > 1)  # not a bucket of empty texts
    batch["has_text"][0] = False  # the no-text vector is used, and so trained
    # the training objective: the fused loss and each branch head's (the modality report's heads)
    outputs = module.net.outputs(batch)
    assert set(outputs) == {"fusion", "tabular", "text"}
    sum(module.task.loss(out, batch["target"]).mean() for out in outputs.values()).backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    # the pooler is not used by mean pooling, as in any BERT fine-tuned with mean pooling
    missing = [n for n in missing if ".pooler." not in n]
    assert not missing, f"parameters without a gradient: {missing}"


def test_either_branch_alone_is_a_model(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    batch = next(iter(dm.val_dataloader()))
    for tabular, text in [(True, False), (False, True), (True, True)]:
        module = fusion_module(dm, tabular=tabular, text=text).eval()
        assert module(batch).shape == (len(batch["target"]), 2)
    with pytest.raises(ValueError, match="at least one branch"):
        FusionModel(n_outputs=2)


def test_a_projected_branch_reaches_the_head_at_its_projected_width():
    layer = ConcatFusion({"tabular": 12, "text": 384}, project={"text": 16})
    out = layer({"tabular": torch.randn(5, 12), "text": torch.randn(5, 384)})
    assert layer.out_features == out.shape[1] == 28
    assert sorted(layer.project) == ["text"]  # the table is kept whole
    tab = TabularMLP(cardinalities=[4], n_cont=1, layers=[24])
    with pytest.raises(ValueError, match=r"project names \['txt'\], but this model's branches are \['tabular'\]"):
        FusionModel(n_outputs=2, tabular=tab, fusion=lambda w: ConcatFusion(w, project={"txt": 16}))


def test_a_gate_starts_open_or_nearly_shut_as_asked():
    layer = GatedFusion({"tabular": 12, "text": 32}, d=8, gate_bias={"tabular": 2.0, "text": -2.0}).eval()
    joined = torch.zeros(1, 44)  # with no signal, each gate is sigmoid(its bias)
    assert torch.sigmoid(layer.gate["tabular"](joined)).min() > 0.85
    assert torch.sigmoid(layer.gate["text"](joined)).max() < 0.15
    with pytest.raises(ValueError, match=r"gate_bias names \['image'\]"):
        GatedFusion({"tabular": 12}, gate_bias={"image": 1.0})


def test_the_head_sizes_itself_from_the_branch_widths():
    tab = TabularMLP(cardinalities=[4], n_cont=1, layers=[24])
    assert FusionModel(n_outputs=3, tabular=tab).head.out.in_features == 24
    gated = FusionModel(n_outputs=3, tabular=tab, fusion=lambda w: GatedFusion(w, d=7))
    assert gated.head.out.in_features == 7


def test_predictions_from_saved_preprocessing_match_the_training_pipeline(tiny_bert, reviews_sample):
    from mmtab import TabularPreprocessor, predict_frame

    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm).eval()
    restored = TabularPreprocessor.from_state_dict(dm.preprocessor.state_dict())  # what a checkpoint holds
    valid = dm.frames["valid"]
    table = predict_frame(module, restored, valid, batch_size=64)
    with torch.no_grad():
        direct = torch.softmax(module(dm.table("valid")[slice(0, len(valid))]), dim=1)[:, 1]
    torch.testing.assert_close(torch.tensor(table["prob_1"].to_numpy()), direct, atol=1e-5, rtol=1e-4)
    assert table["loss"].notna().all()


def text_into_tabular(dm, *, text_into: str = "tabular", **tabular) -> FusionModel:
    torch.manual_seed(0)
    return FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=[16], **tabular),
                       text=TextEncoder(pretrained=dm.text_model, columns=dm.text_slots), text_into=text_into)


def test_text_into_tabular_makes_the_text_an_input_of_the_tabular_mlp(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    net = text_into_tabular(dm, ensemble_size=3)
    assert net.tabular.n_extra == net.text.out_features and net.branch_heads is None
    assert net.fusion.out_features == net.tabular.out_features  # one set of features reaches the head
    batch = next(b for b in dm.train_dataloader() if b["has_text"].sum() > 1)
    out = net.train()(batch)
    assert out.shape == (len(batch["target"]), 3, 2)  # the ensemble's members, each reading the text too
    out.sum().backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
               and ".pooler." not in n and n != "text.no_text"]
    assert not missing, f"parameters without a gradient: {missing}"
    other = dict(batch, input_ids=batch["input_ids"].flip(0), attention_mask=batch["attention_mask"].flip(0))
    net.eval()
    assert not torch.allclose(net(batch), net(other))  # the text is read
    # when the text steps aside, the tabular branch reads the table alone: the tabular-only model's weights
    net.drop_branch("text")
    alone = FusionModel(n_outputs=2, tabular=TabularMLP(**dm.tabular_dims, layers=[16], ensemble_size=3))
    assert net.tabular.n_extra == 0 and net.state_dict().keys() == alone.state_dict().keys()
    assert net(batch).shape == (len(batch["target"]), 3, 2)


def test_text_into_tabular_learns_what_the_text_and_a_column_decide_together(tiny_bert, reviews_sample):
    """The target is the text's sentiment flipped where a category says so (an interaction): a linear head
    over the branches' features cannot add them up to it, the tabular MLP that reads both can."""
    rng = np.random.default_rng(0)
    frame = reviews_sample.copy()
    positive = rng.integers(0, 2, len(frame)).astype(bool)
    flip = rng.integers(0, 2, len(frame)).astype(bool)
    frame["Review Text"] = np.where(positive, "love it perfect", "returned it poor fabric")
    frame["Division Name"] = np.where(flip, "flipped", "kept")
    frame["Recommended IND"] = (positive ^ flip).astype(int)
    dm = TabularTextDataModule.from_frame(frame, target="Recommended IND", categorical_cols=REVIEW_CAT,
                                          continuous_cols=[], text_cols=REVIEW_TEXT, text_model=tiny_bert,
                                          batch_size=64, seed=0, max_length=32)
    dm.setup("fit")
    scores = {}
    for text_into in ("fusion", "tabular"):
        module = MultimodalModule(text_into_tabular(dm, text_into=text_into), task=dm.fitted_task, lr=1e-2,
                                  parts={"text": {"frozen": True}})
        trainer = quiet_trainer(max_epochs=8)
        trainer.fit(module, dm)
        scores[text_into] = float(trainer.callback_metrics["val_accuracy"])
    assert scores["tabular"] > 0.95 and scores["fusion"] < 0.8, scores


def test_text_into_needs_both_branches_and_a_known_place(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    with pytest.raises(ConfigError, match="needs both branches.*only the tabular branch"):
        FusionModel(n_outputs=2, tabular=TabularMLP(**dm.tabular_dims, layers=[16]), text_into="tabular")
    with pytest.raises(ConfigError, match="text_into is 'early'"):
        text_into_tabular(dm, text_into="early")
