"""Files mmtab writes for a user, each written whole or not at all.

Every output goes to a temporary file beside its destination and is renamed into place
(`os.replace`, atomic on one file system), so a run killed mid-write leaves the previous file intact
rather than half a file, and two runs never interleave their bytes in one file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary_path)``, then move the result to `path`. The temporary file is removed if
    the write fails; one left by a process killed mid-write (SIGKILL runs no cleanup) is removed by the
    next write to the same path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete ``.NAME.PID.tmp`` files beside `path` whose process is gone; returns them."""
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: is there such a process (sends nothing)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: running
        return True
    return True
