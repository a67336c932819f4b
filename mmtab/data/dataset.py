"""Tensors prepared once, served a whole batch at a time.

A batch is one index tensor slicing every column tensor at once: no per-row ``__getitem__`` and no
collate function in the hot path (for tabular data those cost more than the model's step).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

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


class BatchLoader:
    """An iterable of batches (dicts of tensors) over a `TensorTable`.

    Lightning accepts any iterable with a length as a data loader; this one shuffles with its own
    generator so that a seed fixes the order of every epoch. Token ids are trimmed to each batch's
    longest row; with ``bucket=True`` (training on text) each batch is drawn from rows of similar
    length, the batches then shuffled, so little compute goes to padding. ``by_length=True`` (for
    evaluation, where order does not matter) serves the rows sorted by length.
    """

    def __init__(self, table: TensorTable, *, batch_size: int, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, bucket: bool = False,
                 bucket_batches: int = 50, by_length: bool = False) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.table = table
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last and len(table) >= batch_size
        self.bucket = bucket and "lengths" in table.tensors
        self.bucket_batches = bucket_batches
        self.by_length = by_length and "lengths" in table.tensors
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n, b = len(self.table), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        b = self.batch_size
        table = self.table
        if self.shuffle:
            # One gather per column per epoch, then every batch is a contiguous view: cheaper than a
            # gather per batch.
            table = TensorTable(table[self._order()])
        elif self.by_length:
            table = TensorTable(table[torch.argsort(table.tensors["lengths"], stable=True)])
        for start in range(0, len(self) * b, b):
            yield trim_to_longest(table[slice(start, start + b)])

    def _order(self) -> torch.Tensor:
        n, b = len(self.table), self.batch_size
        perm = torch.randperm(n, generator=self.generator)
        if not self.bucket:
            return perm
        lengths = self.table.tensors["lengths"][perm]
        chunk = self.bucket_batches * b  # sort by length within random chunks of rows ...
        pieces = [perm[s:s + chunk][torch.argsort(lengths[s:s + chunk], descending=True, stable=True)]
                  for s in range(0, n, chunk)]
        order = torch.cat(pieces)
        full = n // b  # ... then shuffle the batches, keeping a short last batch last
        shuffled = order[:full * b].view(full, b)[torch.randperm(full, generator=self.generator)].reshape(-1)
        return torch.cat([shuffled, order[full * b:]])


def trim_to_longest(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut the padded token columns to the batch's longest row: (B, max_length) -> (B, longest)."""
    if "lengths" in batch:
        longest = max(int(batch["lengths"].max()), 1)
        batch["input_ids"] = batch["input_ids"][:, :longest]
        batch["attention_mask"] = batch["attention_mask"][:, :longest]
    return batch
