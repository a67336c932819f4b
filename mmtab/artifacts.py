"""Files mmtab writes for a user, each written whole or not at all.

Every output goes to a temporary file beside its destination and is renamed into place
(`os.replace`, atomic on one file system), so a run killed mid-write leaves the previous file intact
rather than half a file, and two runs never interleave their bytes in one file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mmtab.errors import ConfigError


def write_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary_path)``, then move the result to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
    states = torch.load(last, map_location="cpu", weights_only=True).get("callbacks", {})
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
