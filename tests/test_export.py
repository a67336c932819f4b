"""`mmtab embed`: every row's text vectors, L2-normalised and reduced by a PCA of the training rows, to Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mmtab.models.reduction import Pca

from .test_cli import mmtab


def test_pca_components_are_ordered_orthonormal_and_signed():
    x = torch.randn(500, 8) @ torch.diag(torch.tensor([5.0, 4, 3, 2, 1, 0.5, 0.2, 0.1]))
    pca = Pca.fit(x, 3)
    z = pca.transform(x)
    assert torch.allclose(pca.components @ pca.components.T, torch.eye(3, dtype=torch.float64), atol=1e-10)
    variances = z.var(dim=0)
    assert variances[0] > variances[1] > variances[2] and abs(float(z.mean(dim=0).abs().max())) < 1e-5
    assert torch.equal(Pca.fit(x, 3).components, pca.components)  # the same signs every time


def test_mmtab_embed_writes_every_rows_reduced_vectors(tmp_path, tiny_bert, reviews_sample):
    data = tmp_path / "reviews.parquet"
    reviews_sample.assign(review_id=np.arange(len(reviews_sample)) + 1000).to_parquet(data)
    out = tmp_path / "vectors.parquet"
    common = ["--config=configs/reviews_demo.yaml", f"--data.path={data}", f"--data.text_model={tiny_bert}",
              "--data.max_length=32", f"--model.text_embeddings.cache_dir={tmp_path / 'cache'}",
              f"--trainer.default_root_dir={tmp_path / 'runs'}"]
    proc = mmtab("embed", *common, f"--embed.output={out}", "--embed.dim=5")
    table = pd.read_parquet(out)
    assert len(table) == len(reviews_sample) and set(table["split"]) == {"train", "valid"}
    assert "wrote 1500 rows" in proc.stdout
    pcs = [c for c in table.columns if "_pc" in c]
    assert pcs == [f"{col}_pc{i}" for col in ("Title", "Review Text") for i in range(5)]  # a vector per column
    assert "review_id" in table.columns and "Age" not in table.columns  # the file's ids, not the features
    assert sorted(table["review_id"]) == list(range(1000, 2500))
    train = table[table["split"] == "train"]
    assert np.abs(train[pcs].mean()).max() < 1e-4  # centred on the training rows
    assert train["Title_pc0"].var() > train["Title_pc4"].var()
    again = mmtab("embed", *common, f"--embed.output={out}", check=False)
    assert again.returncode == 2 and "already exists" in again.stderr
    rerun = mmtab("embed", *common, f"--embed.output={out}", "--embed.dim=5", "--embed.overwrite=true")
    assert " 0 encoded" in rerun.stdout + rerun.stderr  # every text from the cache
    assert pd.read_parquet(out)[pcs].equals(table[pcs])
