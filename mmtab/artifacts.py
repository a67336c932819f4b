"""Files mmtab writes for a user, each written whole or not at all.

Every output goes to a temporary file beside its destination and is renamed into place
(`os.replace`, atomic on one file system), so a run killed mid-write leaves the previous file intact
rather than half a file, and two runs never interleave their bytes in one file.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmtab.errors import WriteError


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
    except OSError as error:
        no_room = error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
        raise WriteError(_cannot_write(path, error.strerror or str(error), no_room=no_room)) from error
    except RuntimeError as error:  # torch's zip writer reports a failed write without its errno
        if "inline_container" not in str(error) and "file write failed" not in str(error):
            raise
        torch_says = str(error).strip().splitlines()[0][:120]
        raise WriteError(_cannot_write(path, f"the write stopped short; torch: {torch_says}", no_room=True)) from error
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _cannot_write(path: Path, reason: str, *, no_room: bool) -> str:
    """The message: for a full disk or a size limit (torch's writer says neither, only that its write
    stopped short), how much room there is; for anything else (permissions), the reason alone."""
    room = f"; {shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free on its disk" if no_room else ""
    fix = "Free some space there (or raise the file-size limit)" if no_room else "Check that folder's permissions"
    return (f"cannot write {str(path)!r} ({reason}{room}): nothing was replaced, and the partial file was "
            f"removed. {fix}, or write elsewhere (trainer.default_root_dir, --predictions.output)")


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
