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
