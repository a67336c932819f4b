"""The thread policy: how many intra-op threads each process of a run takes, from the cores it may use
and the cores other work keeps busy.

PyTorch sizes its intra-op pool to every core, and its OpenMP workers spin while they wait for each
other. Alone on a machine that is the fastest choice. Beside other CPU-bound work (another fit, a test
run, a notebook) a parallel region waits on a worker the scheduler gave to the neighbour, and on 2
cores a fit ran at an eightieth of its solo speed, not half (`benchmarks/contention.py`). Making the
workers sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``) halved the solo speed of short steps, so
mmtab leaves PyTorch's workers as they are and sizes the pool instead:

- its share of the cores it may run on (the affinity mask), divided among the run's processes on the
  node (DDP with ``--trainer.devices 2`` gives each process half);
- less the threads of other processes runnable right now (``procs_running`` of ``/proc/stat`` minus
  this process's own running threads), decided when each stage starts and again at most every
  `RECHECK_S` seconds between batches, so a neighbour that starts or stops mid-fit is seen;
- at least one thread.

Other processes' threads are counted only where ``/proc/stat`` describes the cores this process has
(its affinity mask holds every core the kernel reports): in a container given a few cores of a larger
host they would be the host's other tenants, so there the policy keeps its share. ``--threads.count N``
(or ``OMP_NUM_THREADS``, which PyTorch reads at start) fixes the count instead.
The policy is one per process, as the thread count it sets is: a run's `ThreadPolicy` is `activate`d
by `mmtab.training.threads.Threads` (the CLI's ``threads`` section) and `recheck` reaches it from
the loops that are not Lightning's (the encoder pass). Inter-op threads are
left to PyTorch: mmtab's eager steps run no inter-op parallel work.

Results depend on the thread count in the last bits (reductions are split differently), so two runs,
or a run and its resume, are bit-identical when they run with the same count: alone on a machine they
do; beside other work, fix the count.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path

import torch

from mmtab.errors import ConfigError

log = logging.getLogger("mmtab")

SAMPLES, SAMPLE_GAP_S = 3, 0.001  # one look at the run queue: the median of a few readings 1 ms apart
RECHECK_S = 2.0  # between batches, look again at most this often (a look costs about 3 ms)


def cores_available() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _procs_running() -> int:
    with open("/proc/stat") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("procs_running"))


def _own_running() -> int:
    """This process's threads that are running or runnable (its OpenMP workers, spinning or working)."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended
            continue
        count += stat[stat.rindex(")") + 2] == "R"  # the state follows the parenthesised name
    return count


def other_runnable_threads() -> int | None:
    """Threads of other processes that are runnable now; None where that cannot be told (no
    ``/proc``, or a process that sees only part of the machine's cores)."""
    if os.cpu_count() != cores_available():
        return None
    readings = []
    try:
        for i in range(SAMPLES):
            readings.append(max(0, _procs_running() - _own_running()))
            if i + 1 < SAMPLES:
                time.sleep(SAMPLE_GAP_S)
    except (OSError, StopIteration, ValueError):
        return None
    return int(statistics.median(readings))


class ThreadPolicy:
    """Sizes ``torch.set_num_threads`` for this process (see the module's docstring for why).

    Args:
        count: a fixed number of intra-op threads; ``None`` sizes the pool from the cores free, unless
            ``OMP_NUM_THREADS`` is set, which fixes the count PyTorch started with.
        processes: the run's processes on this node, which share its cores equally.
    """

    def __init__(self, count: int | None = None, processes: int = 1) -> None:
        if count is not None and count < 1:
            raise ConfigError(f"threads.count must be at least 1, got {count}: leave it unset to size the "
                              "pool from the cores free")
        self.count = count
        self.fixed = count if count is not None else (torch.get_num_threads() if "OMP_NUM_THREADS" in os.environ
                                                       else None)
        self.share = max(1, cores_available() // max(1, processes))
        self.current: int | None = None
        self.changes = 0  # how often the count changed after the first decision
        self._checked = 0.0

    def describe(self) -> str:
        """One line for the start of a fit: the count now, and how it is decided."""
        if self.fixed is not None:
            source = "threads.count" if self.count is not None else "OMP_NUM_THREADS"
            return f"mmtab: {self.fixed} intra-op thread{'' if self.fixed == 1 else 's'} ({source})"
        return (f"mmtab: {self.current} intra-op threads now, of this process's share of {self.share} "
                f"({cores_available()} cores, fewer while other processes keep them busy; --threads.count N "
                "fixes the count)")

    def decide(self) -> tuple[int, str]:
        """The count for now and why."""
        if self.fixed is not None:
            return self.fixed, "fixed"
        others = other_runnable_threads()
        if others is None:
            return self.share, "the machine's other work is not visible here"
        return max(1, min(self.share, cores_available() - others)), f"{others} other runnable threads"

    def apply(self) -> int:
        """Decide the count now, set it, and say so when it changes; returns it."""
        self._checked = time.monotonic()
        threads, why = self.decide()
        if threads != self.current:
            if self.current is not None:
                self.changes += 1
                log.info("mmtab: %d intra-op thread%s from here (%s)", threads, "" if threads == 1 else "s", why)
            torch.set_num_threads(threads)
            self.current = threads
        return threads

    def recheck(self) -> None:
        """`apply` again if `RECHECK_S` have passed since the last look (cheap to call every batch)."""
        if self.fixed is None and time.monotonic() - self._checked >= RECHECK_S:
            self.apply()

    def activate(self) -> int:
        """Make this the process's policy (what `recheck` reaches) and apply it."""
        global _active
        _active = self
        return self.apply()

    def deactivate(self, threads: int) -> None:
        """Stop sizing the pool and leave it at `threads` (what it was before the run)."""
        global _active
        if _active is self:
            _active = None
        torch.set_num_threads(threads)


_active: ThreadPolicy | None = None


def recheck() -> None:
    """Let the process's active policy look again (see `ThreadPolicy.recheck`); nothing without one."""
    if _active is not None:
        _active.recheck()
