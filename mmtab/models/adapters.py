"""LoRA adapters for a text branch's encoder, with `peft` (the library, not a copy).

Low-rank adapters (Hu et al. 2021) on the encoder's last `last_layers` transformer layers train a
few hundred thousand weights where full fine-tuning trains all of them; the base weights stay as
the pretrained model shipped them, so a checkpoint need hold only the adapters (and the branch's
own small weights) beside the base model's name. MulTaBench's target-aware representations put
them on the last 3 of a small encoder's layers, on the attention's query, key and value and the
dense layers: the defaults here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from mmtab.errors import ConfigError

ADAPTER_MARK = "lora_"  # every adapter weight's name holds it (peft's naming)


@dataclass(frozen=True)
class LoraAdapters:
    """Where the adapters go and how large they are.

    Args:
        rank: the rank r of each adapter's two matrices.
        alpha: the scale numerator: an adapter's output is multiplied by alpha / rank.
        dropout: dropout on an adapter's input.
        last_layers: adapt the encoder's last k transformer layers (the lower ones keep their weights).
        modules: the Linear layers adapted in each of them, by name (BERT's: ``query``, ``key``,
            ``value``, ``dense``).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    last_layers: int = 3
    modules: Sequence[str] = field(default=("query", "key", "value", "dense"))

    def apply(self, encoder: nn.Module) -> int:
        """Put the adapters into `encoder` in place and hold every other weight of it fixed; returns
        how many adapter weights it now trains."""
        from peft import LoraConfig, inject_adapter_in_model

        n_layers = getattr(encoder.config, "num_hidden_layers", None)
        if n_layers is None:
            raise ConfigError("text.lora: the encoder's config names no num_hidden_layers, so its last layers "
                              "cannot be found; use a BERT-like encoder, or no adapters")
        if not 1 <= self.last_layers <= n_layers:
            raise ConfigError(f"text.lora.last_layers is {self.last_layers}; this encoder has {n_layers} layers: "
                              f"give 1 to {n_layers}")
        if self.rank < 1:
            raise ConfigError(f"text.lora.rank is {self.rank}: give 1 or more")
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                            target_modules=list(self.modules),
                            layers_to_transform=list(range(n_layers - self.last_layers, n_layers)))
        try:
            inject_adapter_in_model(config, encoder)
        except ValueError as error:  # peft: no module of those names in those layers
            raise ConfigError(f"text.lora.modules {list(self.modules)}: {error}") from None
        hold_base_fixed(encoder)
        return sum(p.numel() for n, p in encoder.named_parameters() if ADAPTER_MARK in n)


def hold_base_fixed(encoder: nn.Module) -> None:
    """Only the adapters train: every other weight of the encoder needs no gradient."""
    for name, p in encoder.named_parameters():
        p.requires_grad_(ADAPTER_MARK in name)


def has_adapters(module: nn.Module) -> bool:
    return any(ADAPTER_MARK in name for name, _ in module.named_parameters())
