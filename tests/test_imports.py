"""The models are plain `nn.Module`s: importable and usable with torch and transformers alone."""

import subprocess
import sys
import textwrap

from .conftest import ROOT

BLOCKED = ["lightning", "lightning.pytorch", "pytorch_lightning", "pandas", "torchmetrics", "jsonargparse"]


def test_models_import_and_run_without_lightning_or_pandas(tiny_bert):
    code = textwrap.dedent(f"""
        import sys
        for name in {BLOCKED!r}:
            sys.modules[name] = None  # `import name` now raises ImportError
        import torch
        from mmtab.models import ClsPooling, FusionModel, GatedFusion, TabularMLP, TextEncoder
        import mmtab
        assert mmtab.FusionModel is FusionModel  # the public API resolves models lazily, too
        net = FusionModel(n_outputs=3, tabular=TabularMLP(cardinalities=[4, 6], n_cont=2, layers=[8]),
                          text=TextEncoder(pretrained={tiny_bert!r}, pooling=ClsPooling), fusion=GatedFusion)
        batch = {{"cat": torch.tensor([[1, 2], [3, 5]]), "cont": torch.randn(2, 2),
                  "input_ids": torch.tensor([[2, 10, 3], [2, 3, 0]]),
                  "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]), "has_text": torch.tensor([True, False])}}
        net.freeze("text")
        print(tuple(net(batch).shape), sorted(net.frozen))
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pandas") and sys.modules[m])
        assert not leaked, leaked
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "(2, 3) ['text']"


def test_every_public_name_resolves():
    import mmtab

    missing = [name for name in mmtab.__all__ if getattr(mmtab, name, None) is None]
    assert not missing
