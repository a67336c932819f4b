"""On a GPU: the fusion model fits with bf16-mixed, frozen branches stay bit-identical and each
group keeps its learning rate. Selected with ``-m gpu``; skipped where no CUDA device exists."""

import pytest
import torch

from .conftest import fusion_module, quiet_trainer, reviews_datamodule

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_fusion_fits_in_bf16_mixed_on_gpu_with_a_frozen_text_branch(tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm, tiny_bert, branches={"text": {"frozen": True, "lr": 1e-4}})
    before = {k: v.clone() for k, v in module.model.text.state_dict().items()}
    trainer = quiet_trainer(accelerator="gpu", precision="bf16-mixed", max_steps=20, limit_val_batches=2)
    trainer.fit(module, dm)
    assert module.device.type == "cuda"
    after = {k: v.cpu() for k, v in module.model.text.state_dict().items()}
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert torch.isfinite(trainer.callback_metrics["val_loss"])
    names = [g["name"] for g in trainer.optimizers[0].param_groups]
    assert names == ["tabular", "text", "head"]
