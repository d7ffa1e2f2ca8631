"""How many CPU threads torch gets: ``--threads``, else ``OMP_NUM_THREADS`` or ``VLBENCH_THREADS``, else this
process's share.

torch's own default is one thread per core, whatever else runs: two runs on a 2-core machine then keep four
threads busy-waiting for two cores, and each slows far more than twice (measured: a tiny pixelbert run trained at
about 200 samples/s alone and at 3 samples/s beside four other jobs that each took every core). So by default each
vlbench process takes ``min(CPUs // N, CPUs - T)`` (at least 1), where CPUs are the ones this process may use
(affinity and the cgroup's CPU quota), N counts the vlbench processes running on this machine now, itself
included, and T is the CPUs already busy: the larger of the threads the other vlbench processes use (one started
alone took every CPU; one given ``--threads`` uses that many) and the machine's CPU use over a quarter second
before the choice (``/proc/stat``), which also sees jobs that are not vlbench. Measured here: a tiny pre-training
on the 2-core CPU ran at 117 samples/s alone with 2 threads and at 5.3 samples/s with 2 threads beside one
single-thread job (OpenMP threads wait for a core the other job holds); that is what this choice avoids. Each process holds a lock on a slot file holding its thread count for as long as it lives;
reading the locked slots counts the live processes, and a killed one frees its slot with its file descriptors.
The count is taken once, at start: a run's thread count never changes mid-run (CPU float sums depend on it, so
results would too), and run.json records it with the reason.
"""

from __future__ import annotations

import fcntl
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

THREADS_ENV = "VLBENCH_THREADS"
"""A fixed thread count for every vlbench command (as ``--threads``), without setting OpenMP's for other programs."""
SLOTS_ENV = "VLBENCH_SLOTS"
"""Folder of the slot files (default: a per-user folder in the system temp dir; machine-local on purpose)."""


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str
    """How the count was chosen, for run.json: "--threads", "OMP_NUM_THREADS" or the share it is."""

    def to_dict(self) -> dict[str, object]:
        return {"threads": self.threads, "chosen_by": self.reason}


_slot: object | None = None  # this process's open, locked slot file (kept open: closing it releases the lock)
_choice: ThreadChoice | None = None


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cpus = min(cpus, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def busy_cpus(window: float = 0.25) -> float | None:
    """CPUs the machine kept busy over ``window`` seconds (all processes; this one sleeps meanwhile), from
    ``/proc/stat``; None where it cannot be read (not Linux)."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle  # user..steal; guest time is already counted in user

    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    if elapsed <= 0:
        return None
    return (elapsed - (idle1 - idle0)) / elapsed * (os.cpu_count() or 1)


def _slots_dir() -> Path:
    folder = Path(os.environ.get(SLOTS_ENV) or Path(tempfile.gettempdir()) / f"vlbench-cpu-slots-{os.getuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _threads_of(path: Path) -> int | None:
    """The thread count of the live process holding ``path`` (1 until it has written it), or None for a stale
    slot nobody holds (removed)."""
    try:
        with path.open("a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                text = handle.read(32).strip()
                return int(text) if text.isdigit() and int(text) > 0 else 1
        path.unlink(missing_ok=True)
    except OSError:
        pass
    return None


def register() -> list[int]:
    """Hold this process's slot (once); the thread counts of the other vlbench processes holding one now."""
    global _slot
    folder = _slots_dir()
    mine = folder / f"slot-{os.getpid()}"
    if _slot is None:
        handle = mine.open("a+")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # our own new file: never contended
        _slot = handle
    counts = (_threads_of(path) for path in folder.glob("slot-*") if path != mine)
    return [count for count in counts if count is not None]


def _publish(threads: int) -> None:
    """Write this process's thread count into its slot, for the processes that start after it."""
    if _slot is not None:
        _slot.seek(0)
        _slot.truncate()
        _slot.write(str(threads))
        _slot.flush()


def choose(explicit: int | None = None) -> ThreadChoice:
    """The thread count for this process (see the module docstring), without applying it."""
    try:
        others = register()  # also with an explicit count: the processes after this one must see it
    except OSError:  # no writable temp dir
        others = None
    if explicit is not None:
        return ThreadChoice(explicit, "--threads")
    for name in ("OMP_NUM_THREADS", THREADS_ENV):  # OpenMP's first: torchrun sets it to 1 for its ranks
        env = os.environ.get(name, "").strip()
        if env.isdigit() and int(env) > 0:
            return ThreadChoice(int(env), name)
    cpus = usable_cpus()
    busy = busy_cpus()
    in_use = max(sum(others or ()), round(busy) if busy is not None else 0)
    n = len(others) if others is not None else 0
    threads = max(1, min(cpus // (1 + n), cpus - in_use))
    load = f"{busy:.1f} CPUs busy" if busy is not None else "CPU use unknown"
    counted = (f"{n} other vlbench process{'es' if n != 1 else ''} running ({sum(others)} threads)"
               if others is not None else "other vlbench processes not counted")
    return ThreadChoice(threads, f"share of {cpus} usable CPUs: {counted}, {load}")


def apply(explicit: int | None = None) -> ThreadChoice:
    """Choose and set torch's thread count; remembered for run.json (:func:`current`)."""
    import torch  # here, not at import: `vlbench --help` stays fast

    global _choice
    _choice = choose(explicit)
    torch.set_num_threads(_choice.threads)
    try:
        _publish(_choice.threads)
    except OSError:
        pass
    return _choice


def current() -> ThreadChoice | None:
    """The choice :func:`apply` made in this process, if any (None: torch's default was left alone)."""
    return _choice
