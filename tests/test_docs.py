"""Every code block of the README and of docs/ is run here, so no page can drift from the code.

- ``python`` blocks are executed as written (in the repository root, one fresh namespace each).
- ``yaml`` blocks are configs: each is written to a file and parsed by ``mmtab fit --config FILE --print_config``.
- ``bash`` blocks: every ``mmtab`` command (also behind ``srun`` or ``torchrun -m mmtab.cli``) is parsed by
  the CLI with ``--print_config``, which checks each flag and config path against the code without
  training; a block whose info string says ``bash run`` is also run for real, line by line, in a copy of
  the repository's configs and data. ``python benchmarks/X.py --flag`` lines are checked against the
  script's ``--help``; ``python -m pytest -m M`` against the markers pyproject.toml declares. Lines that set
  up an environment (``pip``, ``python3 -m venv``, ``.``, ``lscpu``, the fastai installer) are what CI's
  own Quick start run and the machine check; any other command fails this test until it is given a check.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)
SETUP = ("pip", "python3 -m venv", ".", "lscpu", "../shared/tools/install_fastai.sh")


def blocks(language: str) -> list[tuple[str, str, str]]:
    """(page:line, info string, code) of every block of `language`."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text[:match.start()].count("\n") + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(2).strip(), match.group(3)))
    return found


def commands(code: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comments dropped, ``&&`` chains split."""
    joined = re.sub(r"\\\n\s*", " ", code)
    lines = [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [part.strip() for line in lines if line and not line.startswith("#") for part in line.split("&&")]


def mmtab_args(command: str) -> list[str] | None:
    """The arguments of the mmtab CLI in `command` (after ``mmtab`` or ``-m mmtab.cli``), else None."""
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word == "mmtab" or (word == "mmtab.cli" and i and words[i - 1] == "-m"):
            return words[i + 1:]
    return None


PYTHON = blocks("python")
BASH = blocks("bash")
YAML = blocks("yaml")
MMTAB = [(where, args) for where, _, code in BASH for c in commands(code) if (args := mmtab_args(c)) is not None]
# configs an `mmtab init` line of a page writes: a later line's --config names them (the run test runs both)
WRITTEN = {a.split("=", 1)[1] if "=" in a else args[i + 1] for _, args in MMTAB if args[0] == "init"
           for i, a in enumerate(args) if a.split("=")[0] == "--output"}


def test_the_pages_have_examples():
    assert len(PYTHON) >= 3 and len(MMTAB) >= 20 and len(YAML) >= 1
    assert len(PAGES) >= 8, "the manual's pages are in docs/"


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_every_page_the_readme_and_the_index_link_exists():
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                where = page.relative_to(ROOT)
                assert (page.parent / target).exists(), f"{where} links to {target}, which is not there"


@pytest.mark.parametrize("where,info,code", PYTHON, ids=[w for w, _, _ in PYTHON])
def test_python_block_runs(where, info, code, monkeypatch):
    monkeypatch.chdir(ROOT)
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})


def print_config(args: list[str]) -> str:
    """What ``mmtab ARGS --print_config`` prints (it parses every setting and exits, training nothing)."""
    from mmtab.cli import MmtabCLI, quiet_third_party_output
    from mmtab.data.datamodule import TabularTextDataModule
    from mmtab.training.module import MultimodalModule

    quiet_third_party_output()
    cv = args[:1] == ["cv"]  # `mmtab cv` takes fit's options, parsed without a subcommand
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        MmtabCLI(MultimodalModule, TabularTextDataModule, subclass_mode_model=True, run=not cv,
                 args=[*args[cv:], "--print_config"])
    assert stop.value.code in (0, None), f"mmtab {' '.join(args)} does not parse"
    return out.getvalue()


def init_config_of(args: list[str]) -> str:
    """The config the page's `mmtab init` line writes (written here to a temporary file) for `args`."""
    import tempfile

    from mmtab.init_config import config_text, decide, parse

    (init,) = [a for _, a in MMTAB if a[0] == "init" and any(w in args or f"--config={w}" in args
                                                               for w in (x.split("=", 1)[-1] for x in a))]
    ns = parse(init[1:], "mmtab init")
    path = Path(tempfile.mkdtemp()) / Path(ns.output).name
    path.write_text(config_text(decide(ns.path, ns.target, ns.task), ns.path, ns.target, path.stem, ns.text_model))
    return str(path)


@pytest.mark.parametrize("where,args", MMTAB, ids=[f"{w}:{a[0]}" for w, a in MMTAB])
def test_mmtab_command_parses(where, args, monkeypatch):
    from mmtab.init_config import fit_without_config, parse

    monkeypatch.chdir(ROOT)
    if args[0] == "init":  # its own options; the table it names must be there
        assert (ROOT / parse(args[1:], "mmtab init").path).is_file(), where
        return
    if any(a in WRITTEN or a.split("=", 1)[-1] in WRITTEN for a in args[1:]):
        config = init_config_of(args)
        args = [a if a not in WRITTEN and a.split("=", 1)[-1] not in WRITTEN else a.replace(a.split("=", 1)[-1], config)
                for a in args]
    if args[0] == "fit" and not any(a.startswith(("--config", "-c")) for a in args):
        args = ["fit", *fit_without_config(args[1:])]  # the config it decides, given inline
    assert "model:" in print_config(args), where


@pytest.mark.parametrize("where,info,code", YAML, ids=[w for w, _, _ in YAML])
def test_yaml_block_is_a_config_that_parses(where, info, code, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    config = tmp_path / "config.yaml"
    config.write_text(code)
    printed = print_config(["fit", "--config", str(config)])
    assert "class_path: mmtab.MultimodalModule" in printed and "class_path: mmtab.TabularMLP" in printed, where


@pytest.mark.parametrize("where,info,code", BASH, ids=[w for w, _, _ in BASH])
def test_every_other_shell_line_is_checked(where, info, code):
    markers = re.findall(r'^\s*"(\w+):', (ROOT / "pyproject.toml").read_text(), re.M)
    for command in commands(code):
        if mmtab_args(command) is not None or command.startswith(SETUP):
            continue
        words = shlex.split(command)
        if words[:2] == ["python", "-m"] and words[2] == "pytest":
            asked = re.findall(r"-m (\w+)", " ".join(words[3:]))
            assert all(m in markers for m in asked), f"{where}: {command} names a marker pyproject.toml lacks"
        elif words[0] == "python" and words[1].startswith("benchmarks/"):
            script = ROOT / words[1]
            assert script.exists(), f"{where}: {words[1]} is not there"
            help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True,
                                       cwd=ROOT, timeout=120).stdout
            for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
                assert flag in help_text, f"{where}: {words[1]} has no {flag}"
        else:
            raise AssertionError(f"{where}: no check for the command {command!r}; add one to tests/test_docs.py")


RUN = [(where, code) for where, info, code in BASH if "run" in info.split()]


@pytest.mark.parametrize("where,code", RUN, ids=[w for w, _ in RUN])
def test_runnable_shell_block_runs(where, code, tmp_path):
    for folder in ("configs", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    for command in commands(code):
        args = mmtab_args(command)
        assert args is not None, f"{where}: only mmtab commands are run ({command!r})"
        proc = subprocess.run([sys.executable, "-m", "mmtab.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, f"{where}: mmtab {' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
