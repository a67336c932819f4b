"""Files mmtab writes are whole or absent, and the temporary files of a killed write do not pile up."""

import os
import signal
import subprocess
import sys

import pytest

from mmtab.artifacts import write_atomically


def test_a_failed_write_leaves_neither_a_file_nor_a_temporary(tmp_path):
    target = tmp_path / "out.csv"

    def fails(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(target, fails)
    assert list(tmp_path.iterdir()) == []


def test_a_write_killed_midway_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "out.csv"
    code = ("import sys, time\nfrom pathlib import Path\nfrom mmtab.artifacts import write_atomically\n"
            "def slow(tmp):\n    tmp.write_text('half')\n    print('writing', flush=True)\n    time.sleep(60)\n"
            f"write_atomically(Path({str(target)!r}), slow)\n")
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline() == "writing\n"
    os.kill(writer.pid, signal.SIGKILL)  # no cleanup runs
    writer.wait()
    left = tmp_path / f".out.csv.{writer.pid}.tmp"
    assert left.exists() and not target.exists()
    alive = tmp_path / f".out.csv.{os.getppid()}.tmp"  # a running process's write in progress is left alone
    alive.write_text("in progress")
    write_atomically(target, lambda tmp: tmp.write_text("whole"))
    assert target.read_text() == "whole" and not left.exists() and alive.exists()
