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
    """Call ``write(temporary_path)``, then move the result to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
