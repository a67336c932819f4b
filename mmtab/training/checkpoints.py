"""mmtab's checkpoints: what one holds, how it is written whole, found (``best``/``last``), read back in
one process and partly read (``init_from``).

A checkpoint is Lightning's (weights, optimizer, schedule, loops, callbacks, the data module's fitted
preprocessing) plus the resolved config that built the model (`MODEL_CONFIG_KEY`), all plain values,
so `torch.load(weights_only=True)` reads it and `load_checkpoint` rebuilds the model from the file
alone. Lightning's own hyperparameter machinery is off in the CLI (see `mmtab.cli`).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from mmtab.artifacts import write_atomically
from mmtab.errors import ConfigError

if TYPE_CHECKING:
    from mmtab.data.preprocessing import TabularPreprocessor
    from mmtab.models.fusion_model import FusionModel

MODEL_CONFIG_KEY = "mmtab_model_config"  # where `mmtab fit` stores the config that built the model


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, written atomically: a killed run never leaves half a ``last.ckpt``.

    `extra` entries go into every checkpoint it writes (the CLI's: the config that built the model).
    Every checkpoint the trainer saves passes through here, so this costs the training steps nothing,
    where a callback would be called at every hook of every step.
    """

    def __init__(self, extra: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.extra = dict(extra or {})

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        checkpoint = {**checkpoint, **self.extra}
        write_atomically(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        """Every ``--ckpt_path`` file is read here: one that is not a checkpoint is one message. (A
        sharded checkpoint is a folder, which its strategy reads.)"""
        if Path(path).is_dir():
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return read_checkpoint(path)


def read_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint file's contents, plain values only (`torch.load` with ``weights_only=True``); a file
    that is not one, is cut short, or holds pickled objects is a `ConfigError` naming it. `mmap` maps
    the tensors instead of reading them: a check of the file costs little more than its index."""
    where = f"checkpoint {str(path)!r}"
    if not Path(path).exists():
        raise ConfigError(f"{where} does not exist (working directory: {Path.cwd()})")
    if not Path(path).is_file():
        raise ConfigError(f"{where} is a folder: give the .ckpt file in it that mmtab fit wrote")
    if mmap and not zipfile.is_zipfile(path):  # torch maps only its zip format, and says so cryptically
        raise ConfigError(f"{where} cannot be read (it is not the zip archive torch.save writes): it is cut short, "
                          "damaged or not a checkpoint; give a .ckpt file that mmtab fit wrote")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        if "weights only" in str(error).lower().replace("_", " "):  # torch refused a pickled object
            raise ConfigError(f"{where} holds pickled Python objects, which loading would run as code; mmtab "
                              "reads plain values only: use a checkpoint that mmtab fit wrote") from None
        raise ConfigError(f"{where} cannot be read ({_first_line(error)}): it is not a checkpoint; give a .ckpt "
                          "file that mmtab fit wrote") from None
    except (RuntimeError, EOFError, IndexError, ValueError, OSError) as error:
        raise ConfigError(f"{where} cannot be read ({_first_line(error)}): it is cut short, damaged or not a "
                          "checkpoint; give a .ckpt file that mmtab fit wrote") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


def find_run_checkpoint(which: str, root: str | Path) -> tuple[Path, str]:
    """``--ckpt_path best`` or ``last`` in a fresh process: the newest fit's ``last.ckpt`` under `root`
    (``trainer.default_root_dir``), or the best checkpoint that fit's `ModelCheckpoint` recorded in it.

    Lightning resolves ``best`` only inside the process that ran the fit; the checkpoint callback's
    state in ``last.ckpt`` says which file was best and by what score, so it can be found afterwards.
    Returns the path and a line saying what was chosen.
    """
    lasts = sorted(Path(root).rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not lasts:
        raise ConfigError(f"--ckpt_path {which}: no last.ckpt under {str(root)!r} (trainer.default_root_dir); fit "
                          "with a ModelCheckpoint(save_last=true), as the shipped configs do, or give the file's path")
    last = lasts[-1]
    if which == "last":
        return last, f"the newest fit's last checkpoint: {last}"
    states = read_checkpoint(last).get("callbacks", {})
    best = [s for s in states.values() if s.get("best_model_path")]  # a ModelCheckpoint with a monitor
    if not best:
        raise ConfigError(f"--ckpt_path best: {last} records no best checkpoint; give the fit's ModelCheckpoint a "
                          "monitor (e.g. val_loss), or use --ckpt_path last")
    state = best[0]
    path = Path(state["best_model_path"])
    if not path.exists():  # the run folder was moved: look beside last.ckpt
        path = last.parent / path.name
    if not path.exists():
        raise ConfigError(f"--ckpt_path best: {last} names {state['best_model_path']} as the best checkpoint, and "
                          "that file is gone; give a checkpoint's path instead")
    return path, f"the best checkpoint by {state['monitor']} ({float(state['best_model_score']):.4g}): {path}"


def load_checkpoint(path: str | Path) -> tuple[pl.LightningModule, TabularPreprocessor]:
    """A checkpoint written by ``mmtab fit`` -> (module in eval mode, its fitted preprocessor).

    The module is rebuilt from the config stored in the checkpoint, so this works in a fresh process
    with nothing but the checkpoint file.
    """
    from jsonargparse import ArgumentParser

    from mmtab.data.preprocessing import TabularPreprocessor

    ckpt = read_checkpoint(path)
    state = next((v for k, v in ckpt.items() if isinstance(v, dict) and "preprocessor" in v), None)
    if state is None or MODEL_CONFIG_KEY not in ckpt:
        raise ConfigError(f"{path}: no fitted preprocessor or model config in this checkpoint; it was not written "
                          "by `mmtab fit`. For a module built in Python, build it again and call load_state_dict.")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningModule, "module", fail_untyped=False)
    module = parser.instantiate_classes(parser.parse_object({"module": ckpt[MODEL_CONFIG_KEY]})).module
    module.on_load_checkpoint(ckpt)  # as a trainer's restore: the checks, and what the file keeps beside the weights
    module.load_state_dict(ckpt["state_dict"])
    return module.eval(), TabularPreprocessor.from_state_dict(state["preprocessor"])


def text_branch_state(checkpoint: str, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The text branch's tensors in a checkpoint (``init_from``); a file without them is a `ConfigError`.
    The CLI calls it with `mmap` before a fit makes its run folder, so a wrong file is named first."""
    state = read_checkpoint(checkpoint, mmap=mmap)
    state = state.get("state_dict", state)
    prefix = "net.text."
    text_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not text_state:
        raise ConfigError(f"init_from={checkpoint!r} has no text branch weights (no '{prefix}*' keys): give the "
                          "checkpoint of a fit with a text branch (such as configs/reviews_text.yaml's)")
    return text_state


def load_text_branch(net: FusionModel, checkpoint: str) -> None:
    """Copy the text branch of a checkpoint into `net.text`, naming any key that does not match: the
    one part of a checkpoint read on its own (``init_from``: a text model fine-tuned first)."""
    if net.text is None:
        raise ConfigError(f"init_from={checkpoint!r}: this model has no text branch to start from it")
    text_state = text_branch_state(checkpoint)
    result = net.text.load_state_dict(text_state, strict=False)
    # a donor without a reduction leaves this branch's to be fitted on the training rows, as a fresh one is
    missing = [k for k in result.missing_keys if not k.startswith("reduction.")]
    if missing or result.unexpected_keys:
        raise ConfigError(f"init_from={checkpoint!r} does not fit this text branch: missing keys "
                          f"{missing[:10]}, unexpected keys {result.unexpected_keys[:10]}")
    rank_zero_info(f"text branch started from {checkpoint} ({len(text_state)} tensors)")
