"""The fusion model fits with bf16-mixed (on a CPU with AVX512-BF16 or AMX it halves fine-tuning time;
on a GPU it is the usual setting): frozen branches stay bit-identical and each group keeps its
learning rate. The GPU case is selected with ``-m gpu`` and skipped where no CUDA device exists."""

import pytest
import torch

from .conftest import fusion_module, quiet_trainer, reviews_datamodule

ON_GPU = pytest.param("gpu", marks=[pytest.mark.gpu,
                                    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")])


@pytest.mark.parametrize("accelerator", ["cpu", ON_GPU])
def test_fusion_fits_in_bf16_mixed_with_a_frozen_text_branch(accelerator, tiny_bert, reviews_sample):
    dm = reviews_datamodule(reviews_sample, tiny_bert)
    module = fusion_module(dm, parts={"text": {"frozen": True, "lr": 1e-4}})
    before = {k: v.clone() for k, v in module.net.text.state_dict().items()}
    trainer = quiet_trainer(accelerator=accelerator, precision="bf16-mixed", max_epochs=1,
                            limit_train_batches=20, limit_val_batches=2)
    trainer.fit(module, dm)
    assert module.device.type == ("cuda" if accelerator == "gpu" else "cpu")
    after = {k: v.cpu() for k, v in module.net.text.state_dict().items()}
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert torch.isfinite(trainer.callback_metrics["val_loss"])
    groups = trainer.optimizers[0].param_groups
    assert [g["name"] for g in groups] == ["tabular", "text", "fusion", "head"]
    assert all(p.dtype == torch.float32 for g in groups for p in g["params"])  # mixed: the weights stay fp32
