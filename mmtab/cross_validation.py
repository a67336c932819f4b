"""``mmtab cv --config ... --data.folds K``: k-fold cross-validation as k ordinary runs.

Each fold is exactly the run ``mmtab fit ... --data.fold k`` then ``mmtab test --ckpt_path best``
would make: the fold's rows are its test split, its best epoch is chosen on validation rows drawn from
the other folds (never on the rows it is scored on), and its checkpoint and logs are kept in a folder
of their own. What cross-validation adds is the summary: every test metric's mean and spread over the
folds, and the out-of-fold predictions of every row in one file, each row with all of its file's
columns and its fold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mmtab.errors import ConfigError, StoppedBySignal
from mmtab.predict import predict_frame, write_table


def _cli(args: list[str]):  # noqa: ANN202 -- a MmtabCLI, imported here: mmtab.cli imports this module
    from mmtab.cli import MmtabCLI
    from mmtab.data.datamodule import TabularTextDataModule
    from mmtab.training.module import MultimodalModule

    class FoldCLI(MmtabCLI):
        def before_instantiate_classes(self) -> None:
            if self.config.data.folds is None:  # before the data is read for the model's sizes
                raise ConfigError("mmtab cv needs data.folds, the number of folds (e.g. --data.folds 5); each "
                                  "fold's best epoch is chosen on data.valid_pct of the other folds")
            super().before_instantiate_classes()

    return FoldCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=False,
                   save_config_kwargs={"overwrite": False}, args=args)


def next_version(folder: Path) -> Path:
    """``folder/version_N``, N one past the highest there: an earlier run's results are never replaced."""
    taken = [int(p.name.split("_")[1]) for p in folder.glob("version_*") if p.name.split("_")[1].isdigit()]
    return folder / f"version_{max(taken, default=-1) + 1}"


def run_cross_validation(args: list[str]) -> dict:
    """Fit, test and predict every fold; print and write the summary. Returns it."""
    if any(a in ("-h", "--help") for a in args):
        print("usage: mmtab cv --config CONFIG --data.folds K [any option of mmtab fit]\n\n" + __doc__)
        return {}
    first = _cli(args)
    folds = first.datamodule.folds
    out = next_version(Path(first.trainer.default_root_dir) / "cv")
    print(f"mmtab cv: {folds} folds, each its own run under {out}")
    results, predictions = [], []
    for fold in range(folds):
        cli = _cli([*args, f"--data.fold={fold}", f"--trainer.default_root_dir={out / f'fold_{fold}'}"])
        try:
            cli.trainer.fit(cli.model, cli.datamodule)
        except SIGTERMException:  # Lightning's, a SystemExit with code 0
            raise StoppedBySignal(f"mmtab cv stopped by SIGTERM in fold {fold} of {folds}: the folds before it "
                                  f"are under {out}; run mmtab cv again to score every fold") from None
        best = "best" if cli.trainer.checkpoint_callback is not None else None
        (metrics,) = cli.trainer.test(cli.model, cli.datamodule, ckpt_path=best, verbose=False)
        results.append({k: float(v) for k, v in metrics.items()})
        dm = cli.datamodule
        rows = dm.with_every_column("test")
        predictions.append(predict_frame(cli.model, dm.preprocessor, rows).assign(fold=fold))
        print(f"fold {fold}: " + "  ".join(f"{k}={v:.4f}" for k, v in sorted(results[-1].items())))
    # a metric a fold cannot define (a class with no rows in its test split) is nan there: the summary is
    # over the folds that define it, and says how many do
    defined = {k: [r[k] for r in results if not np.isnan(r[k])] for k in results[0]}
    summary = {"folds": folds, "per_fold": results,
               "mean": {k: float(np.mean(v)) if v else float("nan") for k, v in defined.items()},
               "std": {k: float(np.std(v, ddof=1)) if len(v) > 1 else float("nan") for k, v in defined.items()},
               "defined_in_folds": {k: len(v) for k, v in defined.items()}}
    oof = write_table(pd.concat(predictions).sort_index(), out / "oof_predictions.csv")
    (out / "cv.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"mmtab cv over {folds} folds (mean +- std of the test folds):")
    for k in sorted(summary["mean"]):
        n = summary["defined_in_folds"][k]
        print(f"  {k}: {summary['mean'][k]:.4f} +- {summary['std'][k]:.4f}"
              + (f" (defined in {n} of {folds} folds)" if n < folds else ""))
    print(f"wrote {out / 'cv.json'} and the out-of-fold predictions, {oof}")
    return summary
