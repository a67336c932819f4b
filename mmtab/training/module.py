"""`MultimodalModule`: trains a `FusionModel` with a weighted loss, per-part param groups and one-cycle.

One ``_step`` serves fit, validate and test. The optimizer's groups are derived from the live model
in ``configure_optimizers`` and checked again at fit start; the table of groups is printed then.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import Tensor
from torch.optim import Optimizer
from torchmetrics import MeanMetric, MetricCollection

from mmtab.data.dataset import TensorTable, epoch_seed
from mmtab.embeddings import ProcessShare, TextEmbeddings
from mmtab.embeddings.target_aware import (
    CROSSFIT_KEY,
    FITS_KEY,
    CrossFit,
    TargetAware,
    crossfit_vectors,
    fit_target_aware,
)
from mmtab.embeddings.text_choice import CHOICE_KEY, TextChoice, apply_choice, choose_text
from mmtab.errors import ConfigError, NonFiniteLossError
from mmtab.explanations.calibration import CALIBRATION_KEY, calibrate
from mmtab.explanations.modality import REPORT_KEY, ModalityReport, best_head, format_report, verdict
from mmtab.models.adapters import ADAPTER_MARK
from mmtab.models.fusion_model import FusionModel
from mmtab.pretrained import resolve_pretrained
from mmtab.tasks import TargetScaling, TaskName, get_task
from mmtab.training.checkpoints import load_text_branch, read_checkpoint
from mmtab.training.lightning_private import CURRENT_HOOK
from mmtab.training.losses import loss_weights, weighted_mean
from mmtab.training.param_groups import (
    PartHparams,
    build_param_groups,
    check_optimizer,
    check_part_names,
    format_param_groups,
)
from mmtab.training.schedule import OneCycle, check_resumed_schedule
from mmtab.training.sharding import check_strategy, shard, share_buffers

log = logging.getLogger("mmtab")


class MultimodalModule(pl.LightningModule):
    """A `FusionModel` and how it trains.

    Args:
        net: the model, built (its parts are the param groups).
        task: binary, multiclass or regression (the CLI links it from the data).
        lr: peak learning rate of every part without its own ``lr``.
        weight_decay: decoupled weight decay of every part without its own.
        parts: per-part ``lr``, ``weight_decay`` and ``frozen``, by part name
            (``tabular``, ``text``, ``fusion``, ``head``).
        optimizer: builds the optimizer from the param groups (AdamW unless configured).
        scheduler: the learning-rate schedule, stepped every batch; ``null`` for a constant rate.
        class_weights: one weight per class (in the order of the fitted classes), multiplied into
            each row's weight in the loss.
        target_scaling: how the data standardised a regression target (``mean``, ``std``,
            ``log1p``; the CLI links it from ``data.target_scaling``, in Python pass
            ``dm.target_scaling``). The model learns the standardised target; metrics, predictions
            and the head's ``y_range`` are in the target's own units.
        init_from: a checkpoint of any module with a text branch (a text-only model fine-tuned on
            the target, say) whose text branch weights start this model's text branch; applied when
            fitting starts, before a resumed run restores its own weights. Missing or unexpected keys
            are an error.
        text_embeddings: how a frozen text branch's vectors are computed and kept on disk
            (``model.text_embeddings.cache_dir``, ``.precision``): computed once per table when a
            stage starts, so its batches skip the encoder.
        compile: compile the model with ``torch.compile`` (in place: ``net.compile()``, so the
            checkpoint's keys do not change) when the trainer sets up. The first steps wait for the
            compiler (tens of seconds); later steps fuse the elementwise work between matmuls.
            A C++ compiler must be installed for CPU runs.
        ordered_classes: the target's classes are ordered, in their sorted order (a 1-5 rating learned
            as multiclass): validation and test also report the quadratic weighted kappa (``qwk``).
            An ordinal task reports it always.
        calibrate: fit a temperature on the validation rows at each validation of a fit (temperature
            scaling, `mmtab.explanations.calibration`): it goes into the checkpoint with the log loss and
            expected calibration error before and after, and ``predict`` divides the logits by it
            (whenever a checkpoint holds one, whatever this flag says when predicting).
            The predicted class never changes (for an ordinal target it is the uncalibrated chain's
            median); validation metrics stay those of the uncalibrated model.
        target_aware: fit the text branch's LoRA adapters on the target from the text alone when fitting
            starts, then train on the adapted encoder's vectors (`mmtab.embeddings.target_aware`).
        text_choice: when fitting starts, choose on rows held out from the training rows between the
            table alone, frozen text and (with ``target_aware``) target-aware text, then fit with the
            one whose held-out loss is lowest (`mmtab.embeddings.text_choice`); the checkpoint keeps it.
    """

    def __init__(
        self,
        net: FusionModel,
        task: TaskName,
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        parts: dict[str, PartHparams] | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: OneCycle | None = OneCycle(),  # noqa: B008 -- a frozen-in-place default, never mutated
        class_weights: list[float] | None = None,
        target_scaling: dict[str, Any] | None = None,
        init_from: str | None = None,
        text_embeddings: TextEmbeddings = TextEmbeddings(),  # noqa: B008 -- a frozen-in-place default, never mutated
        compile: bool = False,
        ordered_classes: bool = False,
        calibrate: bool = False,
        target_aware: TargetAware | None = None,
        text_choice: TextChoice | None = None,
    ) -> None:
        super().__init__()
        # NOTE: no `save_hyperparameters`: the model is an object, not a config. `mmtab fit` stores the
        # config that built it in every checkpoint and `mmtab.load_checkpoint` rebuilds from that,
        # so checkpoints stay loadable with `torch.load(weights_only=True)`.
        self.net = net
        self.task = get_task(task)
        self.lr, self.weight_decay = lr, weight_decay
        self.parts = {k: v if isinstance(v, PartHparams) else PartHparams(**v) for k, v in (parts or {}).items()}
        self.optimizer_factory = optimizer
        self.scheduler = scheduler
        n_outputs = net.head.n_outputs
        n_classes = self.task.n_classes(n_outputs)
        if class_weights is not None and len(class_weights) != n_classes:
            raise ConfigError(f"class_weights has {len(class_weights)} values; the model tells {n_classes} classes "
                             f"apart for a {task} task: give one weight per class, or none")
        self.register_buffer("class_weights", None if class_weights is None else torch.tensor(class_weights))
        check_part_names(net, self.parts)
        for name, hp in self.parts.items():
            if hp.frozen:
                net.freeze(name)
        self.target_scaling = TargetScaling(**target_scaling) if target_scaling else None
        if net.head.y_range is not None:
            # y_range is given in the target's units; the head works in the standardised ones. Derived from
            # y_range each time, so a net handed to a second module is not standardised twice.
            y_range = torch.tensor(net.head.y_range, dtype=torch.float64)
            scaled = y_range if self.target_scaling is None else self.target_scaling.encode(y_range)
            net.head.output_range = tuple(scaled.tolist())
        self.ordered_classes = ordered_classes
        self.val_metrics = self.task.metrics(n_outputs, ordered_classes).clone(prefix="val_")
        self.test_metrics = self.task.metrics(n_outputs, ordered_classes).clone(prefix="test_")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        # a model with branch heads reports each branch alone beside the fusion (mmtab.explanations.modality)
        self.modality = (ModalityReport(self.task, n_outputs, ordered_classes, net.branch_heads.names)
                         if net.branch_heads is not None else None)
        self.modality_report: dict[str, Any] | None = None  # the last validation's, or the checkpoint's
        self.prediction_head = "fusion"  # which head `predict_step` answers with (--predictions.head)
        if calibrate and not self.task.classification:
            raise ConfigError(f"model.calibrate: a {task} target has no probabilities to calibrate; it is for binary, "
                              "multiclass and ordinal targets")
        self.calibrate = calibrate
        self.calibration: dict[str, float] | None = None  # the temperature and its measures (the checkpoint's)
        self._calibration_rows: list[tuple[Tensor, Tensor, Tensor | None]] = []
        self.init_from = init_from
        self.text_embeddings = text_embeddings
        self.target_aware = target_aware
        if target_aware is not None:
            target_aware.check(self)
        self.adapter_fits: list[dict[str, Any]] | None = None  # what the target-aware fits did (the checkpoint's)
        self.crossfit: CrossFit | None = None
        self.text_choice = text_choice
        if text_choice is not None:
            text_choice.check(self)
        self.text_choice_report: dict[str, Any] | None = None  # what the choice measured (the checkpoint's)
        self.report_progress = True  # print param groups, each validation and the fit's reports (a nested fit does not)
        if net.text is not None:
            text_embeddings.check()  # before any text is encoded, not after
        self.compile_net, self._compiled = compile, False
        self._fit_seed = 0
        self._wrapped_frozen: frozenset[str] = frozenset()  # the frozen set when DDP last wrapped the model
        self._undefined: dict[str, list[str]] = {}  # per stage: the metrics its rows cannot define

    def setup(self, stage: str) -> None:
        # `setup` runs before Lightning restores a checkpoint (`ckpt_path`), so a resumed run keeps its
        # own weights; `load_from_checkpoint` never calls it, so the donor file is not needed later.
        if stage == "fit" and self.init_from:
            load_text_branch(self.net, self.init_from)
        if self.compile_net and not self._compiled:  # once: validate after fit reuses the compiled model
            self.net.compile()
            self._compiled = True

    def configure_model(self) -> None:
        # Lightning calls this once the processes and their device mesh exist; only its
        # ModelParallelStrategy gives a mesh, and then the model is sharded (FSDP2, `mmtab.training.sharding`).
        check_strategy(self.trainer.strategy)
        if self.device_mesh is not None:
            shard(self.net, self.device_mesh)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning names the running hook (`CURRENT_HOOK`) about 45 times per training step; nn.Module's
        # __setattr__ checks every assignment against parameters, submodules and buffers, which for these
        # plain strings is a few percent of a small step. Everything else takes that path.
        if name == CURRENT_HOOK:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.net(batch)

    def per_sample_losses(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """(outputs, per-row losses, per-row loss weights) for a labelled batch."""
        output = self.net(batch)
        losses = self.task.loss(output, batch["target"])
        return output, losses, loss_weights(batch["target"], batch.get("weight"), self.class_weights)

    def _step(self, batch: Mapping[str, Tensor], stage: str) -> Tensor:
        if self.modality is None:
            outputs = {"fusion": self.net(batch)}
        else:
            outputs = self.net.outputs(batch)
        output = outputs["fusion"]
        target = batch["target"]
        weights = loss_weights(target, batch.get("weight"), self.class_weights)
        if stage == "train":
            if self.trainer.world_size > 1:
                world = {"world_size": self.trainer.world_size,
                         "world_sum": lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")}
            else:
                world = {}
            losses = {"fusion": self.task.loss(output, target)}
            loss = weighted_mean(losses["fusion"], weights, **world)
            if len(outputs) > 1:
                # The branch heads learn beside the fusion (how much of their gradient reaches the branches
                # is the model's branch_loss_weight): their losses summed per row, as one ensemble-shaped
                # loss over (B, branches, outputs), one op instead of one per branch.
                branch_outputs = [out for name, out in outputs.items() if name != "fusion"]
                if all(out.ndim == 2 for out in branch_outputs):
                    per_row = self.task.loss(torch.stack(branch_outputs, dim=1), target) * len(branch_outputs)
                else:  # a tabular ensemble's (B, k, outputs) beside the text's (B, outputs)
                    per_row = sum(self.task.loss(out, target) for out in branch_outputs)
                loss = loss + weighted_mean(per_row, weights, **world)
            # Checked every step, before backward, so a NaN step changes no weight. It is one host sync
            # (on a CPU the adult throughput is the same with or without it: benchmarks/throughput.py).
            if not torch.isfinite(loss):
                raise NonFiniteLossError(self._non_finite_message(loss, losses["fusion"], batch))
            # Logged only on the steps Lightning writes to its loggers (it writes after step s when
            # s + 1 is a multiple of log_every_n_steps), and only for a logger to read (no callback or
            # progress bar does): a `self.log` call costs about a tenth of a small step (a host sync and
            # Lightning's bookkeeping, which then goes through the logged value at every later step).
            if self.trainer.loggers and (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
                self.log("train_loss", loss.detach(), on_step=True, on_epoch=False)
            return loss
        losses = {name: self.task.loss(out, target) for name, out in outputs.items()}
        metrics, mean_loss = self._stage_metrics(stage)
        mean_loss.update(losses["fusion"].detach(), 1.0 if weights is None else weights)  # exact sum(w*l)/sum(w)
        if self.calibrate and stage == "val" and not self.trainer.sanity_checking:
            kept = None if weights is None else weights.detach()
            self._calibration_rows.append((output.detach().float(), target, kept))
        target_units = self.in_target_units(target)
        metrics.update(self.in_target_units(self.task.metric_inputs(output.detach())), target_units)
        self.log(f"{stage}_loss", mean_loss, on_epoch=True, prog_bar=True)
        undefined = self._undefined.get(stage, ())
        self.log_dict({name: metric for name, metric in metrics.items() if name not in undefined}
                      if undefined else metrics, on_epoch=True, prog_bar=stage == "val")
        if self.modality is not None:  # the branch heads' metrics: logged once per epoch (`_modality_summary`)
            inputs = {name: self.in_target_units(self.task.metric_inputs(out.detach()))
                      for name, out in outputs.items()}
            self.modality.update(stage, inputs, target_units, {k: v.detach() for k, v in losses.items()}, weights)
        return weighted_mean(losses["fusion"], weights)

    def _stage_metrics(self, stage: str) -> tuple[MetricCollection, MeanMetric]:
        """The fused model's metrics and mean loss of an evaluation stage (``val`` or ``test``)."""
        return (self.val_metrics, self.val_loss) if stage == "val" else (self.test_metrics, self.test_loss)

    def _mark_undefined(self, stage: str, split: str) -> None:
        """Find the metrics this split's rows cannot define (a class with no rows in it), once per
        split, and say so; they are logged as nan at each epoch's end (`_log_undefined`)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage in self._undefined or not self.task.classification or not hasattr(datamodule, "table"):
            return
        classes = list(datamodule.preprocessor.classes)
        target = datamodule.table(split).tensors.get("target")
        if target is None or not classes:
            return
        counts = torch.bincount(target.long(), minlength=len(classes)).tolist()
        names = [f"{stage}_{name}" for name in self.task.undefined_metrics(counts)]
        self._undefined[stage] = names
        if names:
            absent = ", ".join(repr(c) for c, n in zip(classes, counts, strict=True) if n == 0)
            if rank_zero_only.rank == 0:  # each process sees the same split; one says so
                log.warning(
                    f"mmtab: warning: the {split} split ({len(target)} rows) has no rows of class {absent}: "
                    f"{', '.join(names)} cannot be measured on it and are reported as nan, never as a score. "
                    f"Give that class more rows, or judge the run by {stage}_loss and the metrics that remain")

    def _log_undefined(self, stage: str) -> None:
        for name in self._undefined.get(stage, ()):
            self.log(name, float("nan"), prog_bar=stage == "val")

    def _modality_summary(self, stage: str) -> dict[str, Any] | None:
        """The stage's modality report, its branches' metrics logged (``val_tabular_auroc``, ...).
        Lightning has computed the fused model's logged metrics by now; compute returns those values."""
        if self.modality is None:
            return None
        if self.trainer.sanity_checking:
            self.modality.reset(stage)
            return None
        metrics, mean_loss = self._stage_metrics(stage)
        undefined = self._undefined.get(stage, ())
        fused = {name[len(stage) + 1:]: (float("nan") if name in undefined else float(value))
                 for name, value in metrics.compute().items()}
        fused["loss"] = float(mean_loss.compute())
        report = self.modality.summary(stage, fused, self.task.main_metric,
                                       [name[len(stage) + 1:] for name in undefined], epoch=self.current_epoch)
        for branch in self.modality.branches:  # the values each process has already summed over all of them
            self.log_dict({f"{stage}_{branch}_{k}": v for k, v in report["heads"][branch].items()
                           if not k.startswith("loss_vs")}, rank_zero_only=True)
        return report

    def on_validation_epoch_end(self) -> None:
        self._log_undefined("val")
        report = self._modality_summary("val")
        if report is not None and self.trainer.state.fn == "fit":
            self.modality_report = report  # each checkpoint written after this validation keeps it
        if self._calibration_rows:
            if self.trainer.state.fn == "fit":
                self.calibration = self._fit_calibration()
            self._calibration_rows = []

    def _fit_calibration(self) -> dict[str, Any]:
        """The temperature of this validation's outputs, and the log loss and ECE before and after it
        (the log loss summed over every process, so each finds the same T)."""
        rows = self._calibration_rows
        weights = None if rows[0][2] is None else torch.cat([w for _, _, w in rows])
        world_sum = ((lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")) if self.trainer.world_size > 1
                     else None)
        measured = calibrate(self.task, torch.cat([o for o, _, _ in rows]), torch.cat([t for _, t, _ in rows]),
                             weights, world_sum=world_sum)
        return {**measured, "epoch": self.current_epoch}

    def on_test_epoch_end(self) -> None:
        self._log_undefined("test")
        report = self._modality_summary("test")
        if report is not None:
            rank_zero_info("modality report (test rows):\n" + format_report(report))

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        fused = self.prediction_head == "fusion"
        output = self.net(batch) if fused else self.net.outputs(batch)[self.prediction_head]
        out = {}
        if fused and self.calibration is not None:  # the temperature was fitted to the fused model's outputs
            raw = self.task.activate(output)
            output = output.float() / self.calibration["temperature"]
            out["predicted"] = torch.as_tensor(self.task.predicted_class(raw.cpu().numpy()))  # never moved by T
        out["output"] = self.in_target_units(self.task.activate(output))
        if "target" in batch:
            out["loss"] = self.task.loss(output.float(), batch["target"])
        return out

    # -------------------------------------------------------------------------------- optimizer
    def configure_optimizers(self):  # type: ignore[override]
        optimizer = self.build_optimizer()
        if self.scheduler is None:
            return optimizer
        total = self.trainer.estimated_stepping_batches
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler.build(optimizer, int(total)), "interval": "step"}}

    def build_optimizer(self) -> Optimizer:
        """The optimizer over one param group per part, built from the live model (no schedule)."""
        return self.optimizer_factory(build_param_groups(self.net, self.parts, lr=self.lr,
                                                         weight_decay=self.weight_decay))

    def on_validation_end(self) -> None:
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit" or not self.report_progress:
            return  # `validate` prints its own table
        branches = tuple(f"val_{b}_" for b in (self.modality.branches if self.modality is not None else ()))
        shown = {k: float(v) for k, v in self.trainer.callback_metrics.items()
                 if k.startswith("val_") and not k.startswith(branches)}  # the branches' are in the report
        rank_zero_info(f"epoch {self.current_epoch}: " + "  ".join(
            f"{k}=undefined" if k in self._undefined.get("val", ()) else f"{k}={v:.4f}"
            for k, v in sorted(shown.items())))

    def in_target_units(self, values: Tensor) -> Tensor:
        """Standardised regression values -> the target's units (anything else passes through)."""
        return values if self.target_scaling is None else self.target_scaling.decode(values.float())

    def _non_finite_message(self, loss: Tensor, losses: Tensor, batch: Mapping[str, Tensor]) -> str:
        rows = batch.get("row", torch.arange(len(losses), device=losses.device))
        bad = ~torch.isfinite(losses.detach())
        shown = (rows[bad] if bad.any() else rows)[:10].tolist()
        which = ("rows whose loss is not finite" if bad.any()
                 else "rows of the batch (each loss is finite; their sum is not)")
        return (f"the training loss became {float(loss.detach()):g} at step {self.global_step} "
                f"(epoch {self.current_epoch}); "
                f"{which}: {shown}. Training stopped before this step changed any weight, and no checkpoint was "
                "written with it. Lower the learning rate (model.lr, model.parts.<part>.lr), or check those rows.")

    def on_train_epoch_start(self) -> None:
        # Dropout (and anything else drawing from torch's RNG) in epoch e depends on (seed, e) alone, so a
        # run resumed from a checkpoint trains its next epoch exactly as the uninterrupted run did. Only the
        # generators this process draws from are seeded, the CPU's and its accelerator's: torch.manual_seed
        # visits every device kind and, before CUDA starts, stores a stack trace for later.
        seed = epoch_seed(self._fit_seed, self.current_epoch)
        torch.default_generator.manual_seed(seed)
        if self.device.type != "cpu":
            torch.get_device_module(self.device).manual_seed(seed)
        self._rewrap_if_frozen_set_changed()

    def _rewrap_if_frozen_set_changed(self) -> None:
        """DDP syncs the gradients of the parameters that required grad when it wrapped the model. Once a
        part is frozen or unfrozen (`mmtab.Unfreeze`, or a user's own hook; callbacks' epoch-start hooks
        run before this one), wrapping again makes it sync exactly the trainable set; the optimizer is
        unchanged."""
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy) and self.net.frozen != self._wrapped_frozen:
            strategy.model = strategy.lightning_module
            strategy.configure_ddp()
            self._wrapped_frozen = self.net.frozen

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Before the weights are loaded: a checkpoint of another model (another config, other data) is
        one message naming the weights that differ, not PyTorch's list of every mismatch. (A sharded
        checkpoint's weights were loaded by its strategy already: nothing is left here to compare.)"""
        self.modality_report = checkpoint.get(REPORT_KEY)
        self.calibration = checkpoint.get(CALIBRATION_KEY)  # a fit that calibrated: predict applies it
        self.adapter_fits = checkpoint.get(FITS_KEY)
        self.text_choice_report = checkpoint.get(CHOICE_KEY)
        if self.text_choice_report is not None:  # before the weights: a model whose text stepped aside has none
            self._apply_text_choice(self.text_choice_report["choice"])
        if CROSSFIT_KEY in checkpoint:
            self.crossfit = CrossFit.from_checkpoint(checkpoint[CROSSFIT_KEY])
        theirs = checkpoint.get("state_dict") or {}
        if not theirs:
            return
        if self._base_weights_left_out():  # the adapted encoder's base weights: the pretrained ones, as built
            theirs.update({k: v for k, v in self.state_dict().items() if k not in theirs and _is_base_weight(k)})
        if self.net.branch_heads is not None and not any(k.startswith("net.head.branches.") for k in theirs):
            self.drop_branch_heads()  # a checkpoint from before the modality report: the model it holds
        own = self.state_dict()
        differ = [f"{k} is {tuple(theirs[k].shape)} there and {tuple(v.shape)} here" for k, v in own.items()
                  if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != tuple(v.shape)]
        differ += [f"{k} is not in it" for k in own if k not in theirs]
        if differ:
            more = f" and {len(differ) - 2} more" if len(differ) > 2 else ""
            raise ConfigError(f"the checkpoint holds another model than this config builds ({'; '.join(differ[:2])}"
                              f"{more}): use the config it was trained with (config.yaml beside its run's "
                              "checkpoints)")

    def drop_branch_heads(self) -> None:
        """No branch heads and no modality report (a model fitted before they existed)."""
        self.net.drop_branch_heads()
        self.modality = None

    def select_prediction_head(self, head: str) -> str:
        """Which head `predict_step` answers with: ``fusion``, ``tabular``, ``text``, or ``best`` (the
        fusion unless a branch alone beat it on validation by more than noise: the checkpoint's
        modality report decides). Returns the head chosen."""
        available = ["fusion", *(self.modality.branches if self.modality is not None else ())]
        chosen = best_head(self.modality_report) if head == "best" else head
        if chosen not in available:
            why = ("this model has one branch and no branch heads" if self.modality is None
                   else f"this model's heads are {available}")
            raise ConfigError(f"--predictions.head {head}: {why}; use fusion or best")
        self.prediction_head = chosen
        return chosen

    def _base_weights_left_out(self) -> bool:
        """A text branch with LoRA adapters over the pretrained weights as shipped: checkpoints hold the
        adapters without the base weights (they are `pretrained`'s files). With `init_from` the base
        weights are another fit's, so they are kept."""
        return self.net.text is not None and self.net.text.lora is not None and not self.init_from

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._base_weights_left_out() and "state_dict" in checkpoint:
            checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not _is_base_weight(k)}
        if self.modality_report is not None:
            checkpoint[REPORT_KEY] = self.modality_report
        if self.calibration is not None:
            checkpoint[CALIBRATION_KEY] = self.calibration
        if self.adapter_fits is not None:
            checkpoint[FITS_KEY] = self.adapter_fits
        if self.crossfit is not None:
            checkpoint[CROSSFIT_KEY] = self.crossfit.to_checkpoint()
        if self.text_choice_report is not None:
            checkpoint[CHOICE_KEY] = self.text_choice_report
        bad = [name for name, p in self.net.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteLossError(f"weights are no longer finite at step {self.global_step} (epoch "
                                     f"{self.current_epoch}): {bad[:5]}; no checkpoint was written with them. Lower "
                                     "the learning rate (model.lr, model.parts.<part>.lr).")

    def on_fit_start(self) -> None:
        self._fit_seed = torch.initial_seed()  # what seed_everything set; the base of every epoch's seed
        self._wrapped_frozen = self.net.frozen  # DDP wrapped the model (strategy setup) just before this
        datamodule = getattr(self.trainer, "datamodule", None)
        check_text_model(self.net, datamodule)
        check_target_scaling(self, datamodule)
        needs_rows = ((self.text_choice is not None and self.text_choice_report is None)
                      or (self.target_aware is not None and self.adapter_fits is None))  # a resumed run's has them
        if needs_rows and not hasattr(datamodule, "table"):
            raise ConfigError("model.target_aware and model.text_choice fit on the data module's training rows: fit "
                              "with a TabularTextDataModule (trainer.fit(module, datamodule=...))")
        if self.text_choice is not None and self.text_choice_report is None:
            self.text_choice_report = choose_text(self, datamodule.table("train"), seed=datamodule.seed,
                                                  batch_size=datamodule.batch_size)
            self._apply_text_choice(self.text_choice_report["choice"])
        elif needs_rows:
            self.crossfit = fit_target_aware(self, datamodule.table("train"), seed=datamodule.seed)
        for optimizer in self.trainer.optimizers:
            check_optimizer(self.net, optimizer)
            if self.report_progress:
                rank_zero_info("mmtab param groups (peak lr per part):\n" + format_param_groups(optimizer))
        self._attach_text_embeddings("train", "valid")
        if hasattr(datamodule, "table"):
            train = datamodule.table("train")
            if self.crossfit is not None:  # each training row's vector from the adapter that never saw it
                train.put("text_embedding", crossfit_vectors(self.text_embeddings, self.net.text, train,
                                                             self.crossfit).view(len(train), -1))
            fit_text_reduction(self.net, self.text_embeddings, train)

    def _apply_text_choice(self, choice: str) -> None:
        """The model as the text choice left it: where the text stepped aside, without its text branch,
        its branch heads and its modality report, and (while fitting) with an optimizer over what is left."""
        had_text = self.net.text is not None
        apply_choice(self.net, choice)
        if not had_text or self.net.text is not None:
            return
        self.modality, self.modality_report = None, None
        self.parts = {name: hp for name, hp in self.parts.items() if name in self.net.parts()}  # `text` has gone
        if self._trainer is not None and self.trainer.state.fn == "fit":
            like = next(self.net.tabular.parameters())
            self.net.to(device=like.device, dtype=like.dtype)  # the new head, where the rest of the model is
            self.trainer.strategy.setup_optimizers(self.trainer)  # the groups configured before name a head now gone

    def on_fit_end(self) -> None:
        """The modality report of the checkpoint a user will take (the best one where a checkpoint
        callback monitors a metric, else the last validation's), as a short table, and one line where
        a branch alone beats the fusion by more than noise."""
        report, calibration = self.modality_report, self.calibration
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if getattr(callback, "monitor", None) else ""
        if best:
            saved = read_checkpoint(best, mmap=True)
            report, calibration = saved.get(REPORT_KEY, report), saved.get(CALIBRATION_KEY, calibration)
        if rank_zero_only.rank != 0 or not self.report_progress:
            return
        if report is not None:
            which = f"the best checkpoint's, epoch {report['epoch']}" if best else f"epoch {report['epoch']}"
            rank_zero_info(f"modality report (validation rows, {which}):\n{format_report(report)}")
            line = verdict(report)
            if line:
                log.warning(line)
        if calibration is not None:
            c = calibration
            rank_zero_info(f"calibration (validation rows, epoch {c['epoch']}): temperature {c['temperature']:.4f}; "
                           f"log loss {c['log_loss_before']:.4f} -> {c['log_loss_after']:.4f}, expected calibration "
                           f"error {c['ece_before']:.4f} -> {c['ece_after']:.4f}; predict applies it")

    def on_train_start(self) -> None:  # after a resumed run's schedule is restored (on_fit_start is before)
        for config in self.trainer.lr_scheduler_configs:
            check_resumed_schedule(config.scheduler, int(self.trainer.estimated_stepping_batches))

    # A frozen encoder's vectors are computed (or read from its cache) once per table when a stage
    # starts, not per batch: each epoch then costs about what the tabular branch and the head cost.
    def on_validation_start(self) -> None:
        share_buffers(self.net)
        self._mark_undefined("val", "valid")
        if self.trainer.state.fn != "fit":  # in fit, on_fit_start did it
            self._attach_text_embeddings("valid")

    def on_test_start(self) -> None:
        share_buffers(self.net)
        self._mark_undefined("test", "test")
        self._attach_text_embeddings("test")

    def on_predict_start(self) -> None:
        if self.trainer.world_size > 1:
            raise ConfigError(f"predict runs in one process (it writes one file in row order); this run has "
                              f"{self.trainer.world_size}: set --trainer.devices 1 --trainer.num_nodes 1")
        self._attach_text_embeddings("predict")

    def _attach_text_embeddings(self, *splits: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if not hasattr(datamodule, "table"):
            return
        share = (ProcessShare(self.global_rank, self.trainer.world_size, self.trainer.strategy.barrier)
                 if self.trainer.world_size > 1 else None)
        for split in splits:
            self.text_embeddings.attach(self.net, datamodule.table(split), share)


def _is_base_weight(key: str) -> bool:
    """A state-dict key of the text encoder's own (not adapter) weights and buffers."""
    return key.startswith("net.text.encoder.") and ADAPTER_MARK not in key


def fit_text_reduction(net: FusionModel, embeddings: TextEmbeddings, train: TensorTable) -> None:
    """A text branch that reduces its vectors (``net.text.reduce_to``) fits the reduction on the training
    rows' pooled vectors before the first step (a resumed run restored it already)."""
    text = net.text
    if text is None or text.reduction is None or text.reduction.is_fitted():
        return
    tensors = train.tensors
    if "text_embedding" in tensors:  # frozen: the vectors the model will read
        vectors = tensors["text_embedding"]
    else:
        ids, mask = tensors["input_ids"], tensors["attention_mask"]
        flat = embeddings.embed(text, ids.flatten(0, ids.ndim - 2), mask.flatten(0, mask.ndim - 2))
        vectors = flat.view(len(ids), -1)
    with torch.no_grad():
        pooled = text.pooled({"text_embedding": vectors.to(text.no_text.device), "has_text": tensors["has_text"]
                              .to(text.no_text.device)}, frozen=True)
    text.reduction.fit(pooled)
    rank_zero_info(f"text reduction: each text's vector to its first {text.reduction.dim} principal components "
                   f"over the {len(pooled)} training rows")


def check_text_model(net: FusionModel, datamodule: object) -> None:
    """The text branch and the data's tokenizer must be the same model (the CLI links them; Python
    code names both, so this catches a mismatch before the first step)."""
    data_model = getattr(datamodule, "text_model", None)
    if net.text is None or data_model is None:
        return
    if resolve_pretrained(net.text.pretrained) != resolve_pretrained(data_model):
        raise ConfigError(f"the text branch is {net.text.pretrained!r} but the data is tokenised for {data_model!r}: "
                         "name one text model for both (data.text_model under the CLI)")
    slots = getattr(datamodule, "text_slots", net.text.columns)
    if slots != net.text.columns:
        raise ConfigError(f"the data gives {slots} text(s) per row (data.join_text is "
                          f"{str(datamodule.options.join_text).lower()}) and the text branch is built for "
                          f"{net.text.columns}: build it with TextEncoder(..., columns=dm.text_slots)")


def check_target_scaling(module: MultimodalModule, datamodule: object) -> None:
    """The module must map outputs back with the scaling the data applied to the targets."""
    if not hasattr(datamodule, "target_scaling"):
        return
    data = datamodule.target_scaling
    own = None if module.target_scaling is None else asdict(module.target_scaling)
    if data != own:
        raise ConfigError(f"the data standardises the target ({data}) but the module was given target_scaling={own}: "
                          "build the module with target_scaling=datamodule.target_scaling (the CLI links it)")
