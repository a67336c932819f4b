"""One optimizer param group per part of the model, derived from the live model and checked.

Groups are built when the optimizer is built, by walking the model's top-level children (its parts:
``tabular``, ``text``, ``fusion``, ``head``), so a replaced part is always the one being trained.
Every parameter, frozen ones included, lands in exactly one group: freezing flips ``requires_grad``
and the optimizer skips parameters without a gradient, so unfreezing needs no new group.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.optim import Optimizer

from mmtab.errors import ConfigError
from mmtab.models.adapters import ADAPTER_MARK


@dataclass
class PartHparams:
    """How one part of the model trains.

    Args:
        lr: peak learning rate of the part's group (default: the module's ``lr``).
        weight_decay: decoupled weight decay of the group (default: the module's ``weight_decay``).
        frozen: start frozen: no gradients, eval mode (BatchNorm statistics and dropout fixed).
    """

    lr: float | None = None
    weight_decay: float | None = None
    frozen: bool = False


class ParamGroupError(ConfigError):
    """Param groups that do not partition the model, or name parts it does not have."""


def build_param_groups(model: nn.Module, parts: Mapping[str, PartHparams], *, lr: float,
                       weight_decay: float) -> list[dict[str, Any]]:
    """``[{"name": part, "params": [...], "lr": ..., "weight_decay": ...}, ...]`` for every child with
    parameters; a part's LoRA adapters are a group of their own (``text.adapters``), at the part's
    rates. Raises if `parts` names a child the model lacks, or if a parameter is left out."""
    check_part_names(model, parts)
    children = dict(model.named_children())
    groups = []
    for name, child in children.items():
        named = list(child.named_parameters())
        if not named:
            continue
        hp = parts.get(name, PartHparams())
        rates = {"lr": lr if hp.lr is None else hp.lr,
                 "weight_decay": weight_decay if hp.weight_decay is None else hp.weight_decay}
        adapters = [p for n, p in named if ADAPTER_MARK in n]
        groups.append({"name": name, "params": [p for n, p in named if ADAPTER_MARK not in n], **rates})
        if adapters:
            groups.append({"name": f"{name}.adapters", "params": adapters, **rates})
    check_partition(model, groups)
    return groups


def check_part_names(model: nn.Module, names: Iterable[str]) -> None:
    """Every name is one of the model's parts (its top-level children)."""
    children = dict(model.named_children())
    unknown = sorted(set(names) - set(children))
    if unknown:
        raise ParamGroupError(f"parts {unknown} are not in the model; its parts are {sorted(children)}")


def check_partition(model: nn.Module, groups: list[dict[str, Any]]) -> None:
    """Every model parameter in exactly one group, and no group parameter outside the model."""
    owner: dict[int, list[str]] = {}
    for group in groups:
        for p in group["params"]:
            owner.setdefault(id(p), []).append(group.get("name", "?"))
    names = {id(p): n for n, p in model.named_parameters()}
    strays = [n for i, n in names.items() if i not in owner]
    doubles = [f"{names.get(i, '?')} in {g}" for i, g in owner.items() if len(g) > 1]
    stale = sum(1 for i in owner if i not in names)
    problems = []
    if strays:
        problems.append(f"parameters in no group: {strays[:10]}" + (" ..." if len(strays) > 10 else ""))
    if doubles:
        problems.append(f"parameters in more than one group: {doubles[:10]}")
    if stale:
        problems.append(f"{stale} optimizer parameters are not in the model (a part was replaced after "
                        "the optimizer was built: build it again)")
    if problems:
        raise ParamGroupError("param groups do not partition the model: " + "; ".join(problems))


def check_optimizer(model: nn.Module, optimizer: Optimizer) -> None:
    check_partition(model, optimizer.param_groups)


def format_param_groups(optimizer: Optimizer) -> str:
    """A table of the optimizer's groups as they are now: what each part trains with (a frozen part
    trains with nothing; `Unfreeze` says its rates when it starts to train)."""
    rows = [("group", "tensors", "params", "trainable", "lr", "weight_decay")]
    for g in optimizer.param_groups:
        n = sum(p.numel() for p in g["params"])
        t = sum(p.numel() for p in g["params"] if p.requires_grad)
        rates = (f"{g.get('max_lr', g['lr']):.3g}", f"{g['weight_decay']:.3g}") if t else ("-", "-")
        rows.append((g.get("name", "?"), str(len(g["params"])), f"{n:,}", f"{t:,}" if t else "0 (frozen)", *rates))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
