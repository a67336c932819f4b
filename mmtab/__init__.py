"""mmtab: models that learn from tables with text in them, with nothing hidden.

The public API is listed here, once (`_WHERE`: each name and the module that holds it). Each name
is imported on first use (PEP 562), so importing a part of mmtab imports only what that part needs:
``import mmtab.models`` works with torch and transformers alone, without Lightning or pandas.
Importing mmtab changes nothing else.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ColumnSpec": "mmtab.data.columns",
    "ConfigError": "mmtab.errors",
    "DataValidationError": "mmtab.errors",
    "MmtabError": "mmtab.errors",
    "NonFiniteLossError": "mmtab.errors",
    "TabularTextDataModule": "mmtab.data.datamodule",
    "PreprocessingOptions": "mmtab.data.preprocessing",
    "TabularPreprocessor": "mmtab.data.preprocessing",
    "TextEmbeddings": "mmtab.embeddings",
    "TargetAware": "mmtab.embeddings.target_aware",
    "TextChoice": "mmtab.embeddings.text_choice",
    "ActivationStats": "mmtab.diagnostics.activation_stats",
    "Initialize": "mmtab.diagnostics.init",
    "find_lr": "mmtab.diagnostics.lr_finder",
    "Explanation": "mmtab.explanations.explanation",
    "explain": "mmtab.explanations.explanation",
    "TextTokenizer": "mmtab.data.tokenization",
    "AttentionFusion": "mmtab.models",
    "ClsPooling": "mmtab.models",
    "ConcatFusion": "mmtab.models",
    "FusionModel": "mmtab.models",
    "GatedFusion": "mmtab.models",
    "GeneralRelu": "mmtab.models",
    "LoraAdapters": "mmtab.models.adapters",
    "MeanPooling": "mmtab.models",
    "TabularMLP": "mmtab.models",
    "TextEncoder": "mmtab.models",
    "embedding_size": "mmtab.models",
    "PredictionWriter": "mmtab.predict",
    "load_checkpoint": "mmtab.training.checkpoints",
    "predict_frame": "mmtab.predict",
    "top_losses": "mmtab.predict",
    "Task": "mmtab.tasks",
    "get_task": "mmtab.tasks",
    "ThreadPolicy": "mmtab.threads",
    "Threads": "mmtab.training.threads",
    "Unfreeze": "mmtab.training.freezing",
    "MultimodalModule": "mmtab.training.module",
    "PartHparams": "mmtab.training.param_groups",
    "build_param_groups": "mmtab.training.param_groups",
    "format_param_groups": "mmtab.training.param_groups",
    "OneCycle": "mmtab.training.schedule",
}

__all__ = sorted(_WHERE)  # the one list: what `from mmtab import *` and `dir(mmtab)` show


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mmtab' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
