import pytest
import torch

from mmtab import ClsPooling, TextEncoder


@pytest.fixture
def encoder(tiny_bert):
    torch.manual_seed(0)
    return TextEncoder(pretrained=tiny_bert).eval()


def batch_of(ids, mask, has_text=None):
    ids, mask = torch.tensor(ids), torch.tensor(mask)
    has = torch.ones(len(ids), dtype=torch.bool) if has_text is None else torch.tensor(has_text)
    return {"input_ids": ids, "attention_mask": mask, "has_text": has}


def test_mean_pooling_ignores_padding(encoder):
    short = encoder(batch_of([[2, 10, 11, 3]], [[1, 1, 1, 1]]))
    padded = encoder(batch_of([[2, 10, 11, 3, 0, 0]], [[1, 1, 1, 1, 0, 0]]))
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)
    assert short.shape == (1, encoder.out_features)


def test_cls_pooling_takes_the_first_token(tiny_bert):
    enc = TextEncoder(pretrained=tiny_bert, pooling=ClsPooling).eval()
    ids, mask = torch.tensor([[2, 10, 11, 3]]), torch.ones(1, 4, dtype=torch.long)
    hidden = enc.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(enc(batch_of(ids.tolist(), mask.tolist())), hidden[:, 0])


def test_rows_without_text_get_the_learned_no_text_vector(encoder):
    with torch.no_grad():
        encoder.no_text.fill_(0.5)
    out = encoder(batch_of([[2, 10, 3], [2, 3, 0]], [[1, 1, 1], [1, 1, 0]], has_text=[True, False]))
    assert torch.all(out[1] == 0.5) and not torch.all(out[0] == 0.5)


def test_remote_code_is_off_unless_asked_for(tiny_bert):
    import inspect

    assert inspect.signature(TextEncoder).parameters["trust_remote_code"].default is False
    assert TextEncoder(pretrained=tiny_bert, trust_remote_code=True).out_features == 32  # forwarded, and harmless here


def test_each_text_column_its_own_vector_equals_encoding_that_column_alone(tiny_bert, reviews_sample):
    """join_text=False: a row's texts are (columns, tokens); each column's vector is the encoder's vector
    of that column's text alone, side by side; a column with no text in a row gets the no-text vector."""
    from mmtab.embeddings import TextEmbeddings
    from mmtab.models.fusion_model import FusionModel

    from .conftest import REVIEW_TEXT, reviews_datamodule

    frame = reviews_sample.head(40).copy()
    frame.loc[3, "Title"] = None
    dm = reviews_datamodule(frame, tiny_bert, tabular=False, join_text=False)
    table = dm.table("train")
    assert table.tensors["input_ids"].shape[1] == 2 and dm.text_slots == 2
    torch.manual_seed(0)
    text = TextEncoder(pretrained=tiny_bert, columns=dm.text_slots).eval()
    assert text.out_features == 2 * 32
    batch = table[torch.arange(len(table))]
    with torch.no_grad():
        together = text(batch)
        for k in range(len(REVIEW_TEXT)):
            ids, mask = batch["input_ids"][:, k], batch["attention_mask"][:, k]
            alone = text.encode(ids, mask)
            has = batch["has_text"][:, k]
            torch.testing.assert_close(together[has, 32 * k:32 * (k + 1)], alone[has], atol=1e-5, rtol=1e-5)
        rows = frame.index[frame["Title"].isna()].intersection(dm.split_frame("train").index)
        position = [list(dm.split_frame("train").index).index(r) for r in rows]
        assert torch.equal(together[position, :32], text.no_text.expand(len(position), -1))

    net = FusionModel(n_outputs=dm.n_outputs, text=text, head_layers=[8])
    net.freeze("text")
    TextEmbeddings(cache_dir=None, precision="fp32").attach(net, table)
    assert table.tensors["text_embedding"].shape == (len(table), 64)
    with torch.no_grad():
        torch.testing.assert_close(text(table[torch.arange(len(table))], frozen=True), together, atol=1e-5,
                                   rtol=1e-5)


@pytest.mark.parametrize("frozen", [True, False])
def test_a_fusion_model_with_a_vector_per_text_column_trains_and_predicts(tiny_bert, reviews_sample, frozen):
    from mmtab import ConcatFusion, FusionModel, MultimodalModule, TabularMLP, predict_frame

    from .conftest import quiet_trainer, reviews_datamodule

    dm = reviews_datamodule(reviews_sample.head(200), tiny_bert, join_text=False)
    net = FusionModel(n_outputs=dm.n_outputs, tabular=TabularMLP(**dm.tabular_dims, layers=[16]),
                      text=TextEncoder(pretrained=tiny_bert, columns=dm.text_slots), fusion=ConcatFusion,
                      head_layers=[16])
    module = MultimodalModule(net, task=dm.fitted_task, lr=3e-3, parts={"text": {"frozen": frozen}})
    before = {k: v.clone() for k, v in net.text.state_dict().items()}
    quiet_trainer(max_epochs=2).fit(module, dm)
    changed = any(not torch.equal(v, net.text.state_dict()[k]) for k, v in before.items())
    assert changed != frozen  # the encoder trained exactly when it was not frozen
    out = predict_frame(module, dm.preprocessor, reviews_sample.head(10))
    assert len(out) == 10 and out.filter(like="prob_").notna().all().all()
