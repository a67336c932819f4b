"""mmtab: models that learn from tables with text in them, with nothing hidden.

The public API is listed here. Each name is imported on first use (PEP 562), so importing a part of
mmtab imports only what that part needs: ``import mmtab.models`` works with torch and transformers
alone, without Lightning or pandas. Importing mmtab changes nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "ColumnSpec": "mmtab.data.columns",
    "ConfigError": "mmtab.errors",
    "DataValidationError": "mmtab.errors",
    "MmtabError": "mmtab.errors",
    "NonFiniteLossError": "mmtab.errors",
    "TabularTextDataModule": "mmtab.data.datamodule",
    "TabularPreprocessor": "mmtab.data.preprocessing",
    "ActivationStats": "mmtab.diagnostics.activation_stats",
    "Initialize": "mmtab.diagnostics.init",
    "find_lr": "mmtab.diagnostics.lr_finder",
    "TextTokenizer": "mmtab.data.tokenization",
    "AttentionFusion": "mmtab.models",
    "ClsPooling": "mmtab.models",
    "ConcatFusion": "mmtab.models",
    "FusionModel": "mmtab.models",
    "GatedFusion": "mmtab.models",
    "GeneralRelu": "mmtab.models",
    "MeanPooling": "mmtab.models",
    "TabularMLP": "mmtab.models",
    "TextEncoder": "mmtab.models",
    "embedding_size": "mmtab.models",
    "PredictionWriter": "mmtab.predict",
    "load_checkpoint": "mmtab.predict",
    "predict_frame": "mmtab.predict",
    "top_losses": "mmtab.predict",
    "Task": "mmtab.tasks",
    "get_task": "mmtab.tasks",
    "Unfreeze": "mmtab.training.freezing",
    "MultimodalModule": "mmtab.training.module",
    "PartHparams": "mmtab.training.param_groups",
    "build_param_groups": "mmtab.training.param_groups",
    "format_param_groups": "mmtab.training.param_groups",
    "OneCycle": "mmtab.training.schedule",
}

__all__ = [
    "ActivationStats",
    "AttentionFusion",
    "ClsPooling",
    "ColumnSpec",
    "ConcatFusion",
    "ConfigError",
    "DataValidationError",
    "FusionModel",
    "GatedFusion",
    "GeneralRelu",
    "Initialize",
    "MeanPooling",
    "MmtabError",
    "MultimodalModule",
    "NonFiniteLossError",
    "OneCycle",
    "PartHparams",
    "PredictionWriter",
    "TabularMLP",
    "TabularPreprocessor",
    "TabularTextDataModule",
    "Task",
    "TextEncoder",
    "TextTokenizer",
    "Unfreeze",
    "build_param_groups",
    "embedding_size",
    "find_lr",
    "format_param_groups",
    "get_task",
    "load_checkpoint",
    "predict_frame",
    "top_losses",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mmtab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # what type checkers and IDEs see; nothing is imported at run time
    from mmtab.data.columns import ColumnSpec
    from mmtab.data.datamodule import TabularTextDataModule
    from mmtab.data.preprocessing import TabularPreprocessor
    from mmtab.data.tokenization import TextTokenizer
    from mmtab.diagnostics.activation_stats import ActivationStats
    from mmtab.diagnostics.init import Initialize
    from mmtab.diagnostics.lr_finder import find_lr
    from mmtab.errors import ConfigError, DataValidationError, MmtabError, NonFiniteLossError
    from mmtab.models import (
        AttentionFusion,
        ClsPooling,
        ConcatFusion,
        FusionModel,
        GatedFusion,
        GeneralRelu,
        MeanPooling,
        TabularMLP,
        TextEncoder,
        embedding_size,
    )
    from mmtab.predict import PredictionWriter, load_checkpoint, predict_frame, top_losses
    from mmtab.tasks import Task, get_task
    from mmtab.training.freezing import Unfreeze
    from mmtab.training.module import MultimodalModule
    from mmtab.training.param_groups import PartHparams, build_param_groups, format_param_groups
    from mmtab.training.schedule import OneCycle
