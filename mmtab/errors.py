"""The mistakes a user can make, as exceptions that carry a complete message.

`mmtab` (the command line) prints such an error's message alone and exits with its `exit_code`
(2, but 143 for a run stopped by SIGTERM), no traceback (``MMTAB_DEBUG=1`` shows it). Anything else
is a bug in mmtab, and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

MAX_ROWS_SHOWN = 5  # offending rows a message names


class MmtabError(Exception):
    """A mistake in the user's data, config or files; the message says what and what to do."""

    exit_code = 2


class StoppedBySignal(MmtabError):
    """A fit stopped from outside (SIGTERM: ``kill``, a scheduler); the message says where to resume.
    Its exit code is the shell's for that signal, so no script takes the run for a finished one."""

    exit_code = 128 + 15  # 143, as a process killed by SIGTERM reports to its shell


class DataValidationError(MmtabError, ValueError):
    """Every problem found in a table, one per line."""

    def __init__(self, problems: list[str], where: str = "data") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in {where}:\n{lines}")


class ConfigError(MmtabError, ValueError):
    """A setting, file or path that cannot work as given."""


class WriteError(MmtabError, OSError):
    """A file mmtab writes could not be written (a full disk, a size limit, no permission): nothing was
    replaced; the message names the file and the reason."""

    exit_code = 1  # the machine's state, not a mistake in what the user gave


class NonFiniteLossError(MmtabError, RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and the rows."""


def first_values(values: Any) -> str:
    """``first rows: 3: 'x', 8: 'y'``: the offending values of a pandas Series with their rows, for a message."""
    return "first rows: " + ", ".join(f"{i}: {v!r}" for i, v in values.head(MAX_ROWS_SHOWN).items())
