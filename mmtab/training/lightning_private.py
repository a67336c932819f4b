"""The private Lightning names mmtab reads, each in this one place with the reason it is read.

Lightning offers no public way to these two; a release that renames one would leave mmtab silently
doing the slow or the wrong thing, so `tests/test_lightning_private.py` checks each name on the
installed Lightning and fails naming the one that moved.
"""

from __future__ import annotations

# The attribute in which Lightning names the running hook, about 45 times per training step.
# `MultimodalModule.__setattr__` stores it without nn.Module's bookkeeping (a few percent of a small step).
CURRENT_HOOK = "_current_fx_name"

# ModelParallelStrategy's `save_distributed_checkpoint` init argument, which it keeps under this name and
# offers no getter for. mmtab's checkpoints are one file, so a folder of shards is refused before training.
SAVE_DISTRIBUTED_CHECKPOINT = "_save_distributed_checkpoint"


def saves_distributed_checkpoint(strategy: object) -> bool:
    """Whether `strategy` writes each checkpoint as a folder of shards (False for strategies without the
    argument)."""
    return bool(getattr(strategy, SAVE_DISTRIBUTED_CHECKPOINT, False))
