"""Text-then-fusion: fine-tune a text-only model, then start a fusion model's text branch from it (init_from)."""

import pytest
import torch

from .conftest import fusion_module, quiet_trainer, reviews_datamodule


@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory, tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert, tabular=False)
    module = fusion_module(dm, tabular=False, lr=1e-3)
    trainer = quiet_trainer(max_steps=6, limit_val_batches=1)
    trainer.fit(module, dm)
    path = tmp_path_factory.mktemp("text") / "text.ckpt"
    trainer.save_checkpoint(path)
    return path, module


def test_a_text_only_checkpoint_starts_the_fusion_text_branch(text_checkpoint, tiny_bert, reviews_sample):
    path, text_module = text_checkpoint
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    fusion = fusion_module(dm, init_from=str(path))
    donor = text_module.net.text.state_dict()
    assert not all(torch.equal(v, fusion.net.text.state_dict()[k]) for k, v in donor.items())  # not yet
    fusion.setup("fit")  # what Trainer.fit calls before any step (and before a resume restores weights)
    loaded = fusion.net.text.state_dict()
    assert donor.keys() == loaded.keys()
    assert all(torch.equal(v, loaded[k]) for k, v in donor.items())


def test_a_checkpoint_that_does_not_fit_names_the_keys(text_checkpoint, tiny_bert, reviews_sample, tmp_path):
    path, _ = text_checkpoint
    ckpt = torch.load(path, weights_only=False)
    ckpt["state_dict"] = {k.replace("embeddings.LayerNorm", "embeddings.LayerNorm_renamed"): v
                          for k, v in ckpt["state_dict"].items()}
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    with pytest.raises(ValueError, match=r"missing keys \['encoder.embeddings.LayerNorm.weight'"):
        fusion_module(dm, init_from=str(bad)).setup("fit")
    no_text = fusion_module(dm, text=False, init_from=str(path))
    with pytest.raises(ValueError, match="has no text branch"):
        no_text.setup("fit")
