"""``mmtab fit|validate|test|predict|lr_find --config configs/....yaml``: LightningCLI, plus the links that
carry what the data decides (task, number of outputs, cardinalities, number of continuous inputs,
the text model) into the model, so a config never states a size the data determines and names its
text model once.

Public Lightning and jsonargparse API only. Lightning's own checkpoint-hyperparameter machinery is
off (``load_from_checkpoint_support=False``): it records every applied link into the saved
hyperparameters assuming the link's target exists, and a text-only model has no tabular branch for
the cardinalities to land in. Instead the CLI's checkpoint writer (`AtomicCheckpointIO`) stores the
model's resolved config, linked values included, in every checkpoint, and
`mmtab.training.checkpoints.load_checkpoint` rebuilds from it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from mmtab.cross_validation import run_cross_validation
from mmtab.data.datamodule import TabularTextDataModule
from mmtab.diagnostics.lr_finder import LrFinderResult, find_lr
from mmtab.diagnostics.plots import plot_lr_finder
from mmtab.errors import ConfigError, MmtabError, StoppedBySignal
from mmtab.explanations.explanation import Explanation
from mmtab.init_config import fit_without_config, run_init
from mmtab.predict import PredictionWriter
from mmtab.training.checkpoints import (
    MODEL_CONFIG_KEY,
    AtomicCheckpointIO,
    find_run_checkpoint,
    read_checkpoint,
    text_branch_state,
)
from mmtab.training.module import MultimodalModule
from mmtab.training.sharding import FSDP1_NAMES, SHARD_THROUGH
from mmtab.training.threads import Threads


def _identity(value: Any) -> Any:
    return value


# (datamodule attribute, model argument path, compute): the one table of what the data decides.
LINKS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("fitted_task", "task", _identity),
    ("n_outputs", "net.n_outputs", _identity),
    ("tabular_dims", "net.tabular.cardinalities", lambda dims: dims["cardinalities"]),
    ("tabular_dims", "net.tabular.n_cont", lambda dims: dims["n_cont"]),
    ("tabular_dims", "net.tabular.cont_quantiles", lambda dims: dims["cont_quantiles"]),
    ("text_model", "net.text.pretrained", _identity),
    ("text_slots", "net.text.columns", _identity),
    ("target_scaling", "target_scaling", _identity),
)


def _init_args_path(path: str) -> str:
    """``net.tabular.n_cont`` -> ``net.init_args.tabular.init_args.n_cont`` (nodes that are classes)."""
    *nodes, leaf = path.split(".")
    return ".".join([*(f"{n}.init_args" for n in nodes), leaf])


def model_config_with_links(config: dict[str, Any], datamodule: TabularTextDataModule) -> dict[str, Any]:
    """The ``model`` section of a dumped config with the linked values filled in, where their part
    exists (a text-only model has no ``net.tabular`` to put cardinalities in)."""
    for source, target, compute in LINKS:
        node: Any = config["init_args"]
        *parents, leaf = _init_args_path(target).split(".")
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[leaf] = compute(getattr(datamodule, source))
    return config


def check_trainer(accelerator: Any, strategy: Any) -> None:
    """The trainer settings a user most often gets wrong for the machine, refused before any data is
    read: a GPU where torch sees none, and Lightning's FSDPStrategy (mmtab shards through another)."""
    name = strategy if isinstance(strategy, str) else str(getattr(strategy, "class_path", "")).rsplit(".", 1)[-1]
    if name in FSDP1_NAMES:
        raise ConfigError(f"trainer.strategy {name}: {SHARD_THROUGH}")
    wanted = {"gpu": ("cuda", "mps"), "cuda": ("cuda",), "mps": ("mps",)}.get(str(accelerator), ())
    seen = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if wanted and not any(seen[kind] for kind in wanted):
        raise ConfigError(f"trainer.accelerator is {accelerator!r}, and torch sees no such device on this machine "
                          f"(torch.cuda.is_available() is {seen['cuda']}): use --trainer.accelerator cpu, or auto "
                          "(a GPU where there is one, else the CPU)")


class SaveFitConfig(SaveConfigCallback):
    """The run's config beside its logs, for `fit` only: `validate` and `predict` make no run folder."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            super().setup(trainer, pl_module, stage)


def load_fitted(model: MultimodalModule, datamodule: TabularTextDataModule, ckpt_path: str) -> None:
    """A fit's weights and fitted preprocessing, read into `model` and `datamodule` (what ``validate``
    restores through Lightning, for the subcommands that are not Lightning's own)."""
    checkpoint = read_checkpoint(ckpt_path)
    state = next((v for v in checkpoint.values() if isinstance(v, dict) and "preprocessor" in v), None)
    if state is None:
        raise ConfigError(f"{ckpt_path}: no fitted preprocessor in this checkpoint; give one that mmtab fit wrote")
    datamodule.load_state_dict(state)  # the checkpoint's fitted preprocessing, not a new fit
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])


class MmtabTrainer(pl.Trainer):
    """Lightning's `Trainer` with `lr_find`, `explain` and `embed`, which make ``mmtab lr_find``,
    ``mmtab explain`` and ``mmtab embed`` subcommands like ``fit``."""

    def explain(self, model: MultimodalModule, datamodule: TabularTextDataModule, ckpt_path: str | None = None,
                output: str | None = None, repeats: int = 5, seed: int = 0, text_rows: int = 20,
                overwrite: bool = False) -> Explanation:
        """What a fitted model relies on, on the validation rows (`mmtab.explanations.explanation`).
        On the command line each option is also spelled ``--explain.<name>`` (``--explain.output``).

        Args:
            ckpt_path: the fitted model: ``best``, ``last`` or a checkpoint file.
            output: the folder to write to; default ``explain`` in ``trainer.default_root_dir``.
            repeats: shuffles per column (their spread is the ``std``).
            seed: the shuffles' seed.
            text_rows: how many rows ``text_changes.csv`` lists.
            overwrite: replace the files a former run wrote there.
        """
        from mmtab.explanations.explanation import explain

        if not ckpt_path:
            raise ConfigError("mmtab explain needs the fitted model: --ckpt_path best, last or a .ckpt file")
        load_fitted(model, datamodule, ckpt_path)
        frame = datamodule.split_frame("valid")
        result = explain(model.to(self.strategy.root_device), datamodule.preprocessor, frame,
                         output=output or Path(self.default_root_dir) / "explain", repeats=repeats, seed=seed,
                         text_rows=text_rows, overwrite=overwrite, batch_size=datamodule.eval_batch_size)
        print(f"mmtab explain: {len(frame)} validation rows\n" + result.summary(model.task.main_metric))
        return result

    def embed(self, model: MultimodalModule, datamodule: TabularTextDataModule, ckpt_path: str | None = None,
              output: str | None = None, dim: int = 30, overwrite: bool = False) -> Path:
        """Every row's text vectors, reduced, in a Parquet file (`mmtab.embeddings.export`). On the
        command line each option is also spelled ``--embed.<name>`` (``--embed.output``).

        Args:
            ckpt_path: a fit's checkpoint (``best``, ``last`` or a file), whose text branch (its LoRA
                adapters among them) computes the vectors; without it, the pretrained encoder as shipped.
            output: the .parquet file to write; default ``embeddings.parquet`` in ``trainer.default_root_dir``.
            dim: the principal components kept per text column (fitted on the training rows).
            overwrite: replace `output` if it exists.
        """
        from mmtab.embeddings.export import export_embeddings

        if ckpt_path:
            load_fitted(model, datamodule, ckpt_path)
        path, table = export_embeddings(model.to(self.strategy.root_device), datamodule,
                                        output or Path(self.default_root_dir) / "embeddings.parquet", dim=dim,
                                        overwrite=overwrite)
        counts = table["split"].value_counts().to_dict()
        print(f"mmtab embed: wrote {len(table)} rows ({counts}) with {table.shape[1]} columns to {path}")
        return path

    def lr_find(self, model: MultimodalModule, datamodule: TabularTextDataModule, min_scale: float = 1e-4,
                max_scale: float = 1000.0, num_steps: int = 100, plot: str | None = None) -> LrFinderResult:
        """Sweep one scale factor over every part's learning rate (their ratios kept), then restore the model.

        Args:
            min_scale: the first scale of the configured learning rates.
            max_scale: the last scale, unless the loss diverges first.
            num_steps: training steps of the sweep.
            plot: the PNG of loss against scale; default ``lr_find.png`` in ``trainer.default_root_dir``.
        """
        datamodule.setup("fit")
        model.setup("fit")  # a text branch started from init_from, as fit would
        model.to(self.strategy.root_device)
        result = find_lr(model, datamodule.train_dataloader(), min_scale=min_scale, max_scale=max_scale,
                         num_steps=num_steps)
        path = plot_lr_finder(result, plot or Path(self.default_root_dir) / "lr_find.png")
        print(f"{result.summary()}\nplot: {path}")
        return result


class MmtabCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "lr_find": {"model", "datamodule"},
                "explain": {"model", "datamodule"}, "embed": {"model", "datamodule"}}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        if isinstance(argv, list) and argv[:1] in (["explain"], ["embed"]):
            # `--explain.output` is the documented spelling; jsonargparse names the method's own options
            # `--output` (a group named after the subcommand would clash with the subcommand's own)
            prefix = f"--{argv[0]}."
            kwargs["args"] = [argv[0], *(a.replace(prefix, "--", 1) if a.startswith(prefix) else a for a in argv[1:])]
        kwargs.setdefault("trainer_class", MmtabTrainer)
        kwargs.setdefault("load_from_checkpoint_support", False)
        kwargs.setdefault("save_config_callback", SaveFitConfig)
        # mmtab prints its own table of parts (param groups) at fit start; Lightning's repeats it
        # and a progress bar only where a person watches a terminal: in a log file each redraw is a line
        kwargs.setdefault("trainer_defaults", {"enable_model_summary": False,
                                               "enable_progress_bar": sys.stdout.isatty()})
        try:
            super().__init__(*args, **kwargs)
        except SIGTERMException:  # Lightning's: a SystemExit with code 0, as if the fit had finished
            raise StoppedBySignal(self.resume_hint()) from None

    def resume_hint(self) -> str:
        """Where a fit stopped by SIGTERM was, and the checkpoint to resume it from."""
        trainer = self.trainer
        where = f"stopped by SIGTERM in epoch {trainer.current_epoch} (step {trainer.global_step})"
        paths = [c.last_model_path or (c.best_model_path if c.monitor is None else "")
                 for c in trainer.checkpoint_callbacks]
        path = next((p for p in paths if p), "")
        if not path:
            return f"{where}, before any checkpoint was written: fit again"
        return (f"{where}; the last checkpoint, from the end of the last whole epoch, is {path}: resume with "
                f"--ckpt_path {path} (the same config; the run goes on as if it had not stopped)")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in ("best", "last"):
            read_checkpoint(path, mmap=True)  # one message for a file that is not a checkpoint; its index alone

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_lightning_class_args(Threads, "threads")
        for source, target, compute in LINKS:
            parser.link_arguments(f"data.{source}", f"model.init_args.{_init_args_path(target)}",
                                  compute_fn=compute, apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        given = [(source, target) for source, target, _ in LINKS
                 if config.get(f"model.init_args.{_init_args_path(target)}") is not None]
        if given:
            raise ConfigError("; ".join(f"model.{target} is decided by the data (data.{source}): remove it from the "
                                       "config" for source, target in given))
        check_trainer(config.trainer.accelerator, config.trainer.strategy)
        init_from = (config.model.get("init_args") or {}).get("init_from")
        if self.subcommand == "fit" and init_from:
            text_branch_state(init_from, mmap=True)  # a wrong file is named before the run folder is made
        reads_a_fit = ("validate", "test", "predict", "explain", "embed")
        if self.subcommand in reads_a_fit and config.get("ckpt_path") in ("best", "last"):
            root = config.trainer.default_root_dir or "."
            path, chosen = find_run_checkpoint(config.ckpt_path, root)
            config.ckpt_path = str(path)
            print(f"mmtab: {self.subcommand} with {chosen}")
        if self.subcommand in ("validate", "test", "predict", "lr_find", "explain", "embed") and \
                config.trainer.logger is None:
            config.trainer.logger = False  # they report on the terminal (or write --predictions.output)

    def instantiate_classes(self) -> None:
        # A class's own check (a model folder that needs code, a cache folder that is a file) raises an
        # `MmtabError` in its __init__; jsonargparse reports it inside a dump of every Union subtype it
        # tried, with the error as the cause: here it is the error alone.
        try:
            super().instantiate_classes()
        except ValueError as error:
            cause = mmtab_cause(error)
            if cause is None:
                raise
            raise cause from None

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        # Lightning checks the accelerator, devices and strategy together as the Trainer is built, before
        # anything trains, and refuses a mismatch (or a strategy's missing package) with a traceback:
        # here it is its message alone.
        try:
            return super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, ModuleNotFoundError) as error:
            raise ConfigError(f"the trainer settings cannot run here: {error}") from error

    def after_instantiate_classes(self) -> None:
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_none=False, format="yaml"))
        if self.subcommand:
            dumped = dumped[self.subcommand]
        model = model_config_with_links(dumped["model"], self.datamodule)
        # the config that built the model goes into every checkpoint (plain values: `weights_only` loads)
        self.trainer.strategy.checkpoint_io = AtomicCheckpointIO(extra={MODEL_CONFIG_KEY: model})
        if self.subcommand != "predict":
            # Lightning adds the `predictions` writer to every subcommand's trainer; it acts in predict
            # only, and elsewhere each training step would call it at every hook (tens of microseconds).
            self.trainer.callbacks = [c for c in self.trainer.callbacks if not isinstance(c, PredictionWriter)]


def mmtab_cause(error: BaseException) -> MmtabError | None:
    """The `MmtabError` an error was raised from (its cause, or its cause's cause, ...), if any."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, MmtabError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class _DropNoise(logging.Filter):
    # advertising; an internal step; accelerators mmtab never uses
    NOISE = ("💡 Tip", "Loading `train_dataloader` to estimate", "TPU available", "HPU available")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def quiet_third_party_output() -> None:
    """What `mmtab` prints is what the user needs: the groups table, the preprocessing summary, one line
    per epoch. Set by the command line only, never at import."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropNoise())
    own = logging.getLogger("mmtab")  # mmtab's own notes (data warnings, the text-embedding cache line)
    if not own.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        own.addHandler(handler)
        own.setLevel(logging.INFO)
        own.propagate = False
    warnings.filterwarnings("ignore", message=r"Starting from v1.9.0, `tensorboardX` has been removed")
    # predict/validate restore a fit's checkpoint callbacks into a run with no logger: nothing is lost
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    # mmtab's batch loader serves rows in order; PredictionWriter needs no batch indices
    warnings.filterwarnings("ignore", message=r"Couldn't infer the batch indices")
    # `mmtab cv` hands each fold's CLI its arguments, beside the process's own
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    # a small table's epoch has fewer steps than the logging interval: mmtab reports once per epoch anyway
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # mmtab keeps frozen parts in eval mode on purpose (see FusionModel.freeze)
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars each time an encoder loads
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def main(args: list[str] | None = None) -> None:
    """The ``mmtab`` console script (returns nothing: a console script's return value is its exit code).

    A user's mistake (`MmtabError`) ends as its message alone and exit code 2 (143 for a fit stopped by
    SIGTERM); ``MMTAB_DEBUG=1`` shows the traceback as well.
    """
    quiet_third_party_output()
    args = sys.argv[1:] if args is None else args
    try:
        if args[:1] == ["cv"]:  # k runs of fit and test, each an ordinary run (mmtab.cross_validation)
            run_cross_validation(args[1:])
            return
        if args[:1] == ["init"]:  # a config for a new table, its columns' roles decided (mmtab.init_config)
            run_init(args[1:])
            return
        if args[:1] == ["fit"] and not any(a.startswith(("--config", "-c")) for a in args) and any(
                a.startswith("--data.path") for a in args):
            args = ["fit", *fit_without_config(args[1:])]
        MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True,
                 save_config_kwargs={"overwrite": False}, args=args)
    except MmtabError as error:
        if os.environ.get("MMTAB_DEBUG"):
            raise
        if rank_zero_only.rank == 0:  # each process of a multi-process run stops with it; one says why
            sys.stderr.write(f"mmtab: error: {error}\n")
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # else gloo's threads abort the exit
        raise SystemExit(error.exit_code) from None


if __name__ == "__main__":
    main()
