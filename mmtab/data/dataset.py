"""Tensors prepared once, served a whole batch at a time.

A batch is one index tensor slicing every column tensor at once: no per-row ``__getitem__`` and no
collate function in the hot path (for tabular data those cost more than the model's step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch

from mmtab.errors import ConfigError


class TensorTable:
    """Equal-length tensors under names; ``table[idx]`` slices all of them with one index tensor."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        lengths = {name: len(t) for name, t in tensors.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"TensorTable columns differ in length: {lengths}")
        self.tensors = dict(tensors)
        self._len = next(iter(lengths.values()), 0)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, idx: torch.Tensor | slice) -> dict[str, torch.Tensor]:
        return {name: t[idx] for name, t in self.tensors.items()}

    def put(self, name: str, tensor: torch.Tensor) -> None:
        """Add or replace one column (a frozen encoder's vectors, say); it must have a value per row."""
        if len(tensor) != self._len:
            raise ValueError(f"column {name!r} has {len(tensor)} rows; the table has {self._len}")
        self.tensors[name] = tensor


class BatchLoader:
    """An iterable of batches (dicts of tensors) over a `TensorTable`.

    Lightning accepts any iterable with a length as a data loader. With ``shuffle=True`` (training)
    each epoch serves every row once, in ``ceil(rows / batch_size)`` batches of near-equal size
    (2,400 rows at 256 are 10 batches of 240, not 9 of 256 and 96 rows left out: on small data the
    rows left out each epoch would be the rarest class's chance). The order of epoch ``e`` is a
    function of ``(seed, e)`` alone, so a run resumed from a checkpoint shuffles its next epoch
    exactly as the uninterrupted run did. `epoch` says which epoch is starting (the data module
    passes its trainer's ``current_epoch``, which a checkpoint restores); without it each full pass
    counts as one. Token ids are trimmed to each batch's longest row; with ``bucket=True`` (training
    on text) each batch is drawn from rows of similar length, the batches then shuffled, so little
    compute goes to padding. Without shuffling (evaluation) batches are `batch_size` rows and the last
    one what is left; ``by_length=True`` (where order does not matter) serves the rows sorted by length.

    `shard` is ``(rank, world_size)`` under data parallelism. Training: every process draws the same
    epoch order and takes every ``world_size``-th batch of it (the same number each, as DDP needs: the
    batch count is rounded up to a multiple of ``world_size``), so one step of the world covers the
    rows that one step of a single process with a ``world_size`` times larger batch would. Evaluation:
    each process takes every ``world_size``-th row, so every row is evaluated exactly once and the
    metrics, synced over processes, are those of one process; every process serves the same number
    of batches (one with fewer rows ends on an empty batch), since a sharded model's forward is a
    collective step of all processes.

    ``pin_memory=True`` (the data module sets it when its trainer runs on a GPU) copies each pass's
    rows into page-locked memory once, so every batch is a view of it and Lightning's copy to the
    device (``non_blocking=True``) overlaps the step before.
    """

    def __init__(self, table: TensorTable, *, batch_size: int, shuffle: bool = False, seed: int = 0,
                 bucket: bool = False, bucket_batches: int = 50, by_length: bool = False,
                 epoch: Callable[[], int] | None = None, shard: tuple[int, int] | None = None,
                 pin_memory: bool = False) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.table = table
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.bucket = bucket and "lengths" in table.tensors
        self.bucket_batches = bucket_batches
        self.by_length = by_length and "lengths" in table.tensors
        self.seed = seed
        self.epoch = epoch
        self.rank, self.world_size = shard or (0, 1)
        self.pin_memory = pin_memory
        self._passes = 0

    def _n_batches(self) -> int:
        """Training batches in an epoch, all processes together: a multiple of the world size."""
        k = max(1, -(-len(self.table) // self.batch_size))
        return -(-k // self.world_size) * self.world_size

    def __len__(self) -> int:
        if self.shuffle:
            return self._n_batches() // self.world_size
        rows = -(-len(self.table) // self.world_size)  # rank 0's share, the largest
        return -(-rows // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        table = self.table
        epoch = self.epoch() if self.epoch else self._passes
        self._passes += 1  # counted when a pass starts: Lightning stops at len() without exhausting us
        if self.shuffle:
            # One gather per column per epoch, then every batch is a contiguous view: cheaper than a
            # gather per batch.
            order, spans = self._order(epoch)
            table = TensorTable(table[order])
            spans = spans[self.rank::self.world_size]  # this process's batches of the common order
        else:
            if self.by_length:
                table = TensorTable(table[torch.argsort(table.tensors["lengths"], stable=True)])
            if self.world_size > 1:  # this process's rows, then its batches
                table = TensorTable(table[slice(self.rank, None, self.world_size)])
            b = self.batch_size
            # every process serves len(self) batches, a process with fewer rows ending on an empty one: a
            # sharded model (FSDP) gathers each block's weights from all processes at every forward
            spans = [(i * b, (i + 1) * b) for i in range(len(self))]
        if self.pin_memory:
            table = TensorTable({name: t.pin_memory() for name, t in table.tensors.items()})
        for start, stop in spans:
            yield trim_to_longest(table[slice(start, stop)])

    def _order(self, epoch: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """(the epoch's row order, its batches as (start, stop) in the order they are served)."""
        n, k = len(self.table), self._n_batches()
        spans = [(i * n // k, (i + 1) * n // k) for i in range(k)]  # sizes differ by one at most
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        perm = torch.randperm(n, generator=generator)
        if not self.bucket:
            return perm, spans
        lengths = self.table.tensors["lengths"][perm]
        chunk = self.bucket_batches * self.batch_size  # sort by length within random chunks of rows ...
        pieces = [perm[s:s + chunk][torch.argsort(lengths[s:s + chunk], descending=True, stable=True)]
                  for s in range(0, n, chunk)]
        shuffled = torch.randperm(k, generator=generator).tolist()  # ... then serve the batches shuffled
        return torch.cat(pieces), [spans[i] for i in shuffled]


def epoch_seed(seed: int, epoch: int) -> int:
    """One seed per (seed, epoch), the same in every process."""
    return (seed * 1_000_003 + epoch) % (2**63)


def trim_to_longest(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut the padded token columns to the batch's longest row: (B, max_length) -> (B, longest)."""
    if "lengths" in batch:
        longest = max(int(batch["lengths"].max()), 1) if len(batch["lengths"]) else 1
        batch["input_ids"] = batch["input_ids"][..., :longest]  # (B, T) or, a text per column, (B, C, T)
        batch["attention_mask"] = batch["attention_mask"][..., :longest]
    return batch
