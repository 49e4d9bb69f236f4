"""The intra-op thread count of a training run on a machine that others may be using.

PyTorch's default (one thread per core) is the fastest on an idle machine, but when other
processes keep cores busy, OpenMP threads that wait for a descheduled sibling spin and training
slows down (measured on this 2-core machine: DIN at 1.5k samples/s with two threads next to three
other jobs, 4.5k with one; a DeepFM epoch 27.8-46.6 s with two, 6.8 s with one).
``train.num_threads: auto``, the default, measures once per process, just before the first
training run, how many cores' worth of work other processes are doing (``/proc/stat`` over 0.2 s,
while this process is idle) and uses the cores left, at least one and at most PyTorch's default; the
later runs of the process (the rows of a study) reuse that count, so one table's rows share it
(benchmarks/thread_default.py, docs/serving.md "Progress and threads"). On an idle machine that is
PyTorch's default. The count is recorded in each run's metrics (``threads``); float sums differ
between thread counts in the last digits, so for numbers that must repeat exactly on a machine whose
load varies, pin it (``train.num_threads=1``); ``train.num_threads=null`` keeps PyTorch's count.
"""
from __future__ import annotations

import os
import time


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    if not parts or parts[0] != "cpu":
        return None
    v = [int(x) for x in parts[1:9]] + [0] * max(0, 9 - len(parts))
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def busy_cores(interval: float = 0.2) -> float | None:
    """Cores' worth of CPU work on the machine over ``interval`` seconds (None where /proc/stat is
    not readable). Called while this process is idle, it is the other processes' load."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(interval)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


_PROCESS_CHOICE: dict[int, int] = {}


def process_threads(default: int) -> int:
    """:func:`auto_threads` measured at the first call of this process for ``default`` and reused
    after (one count for every run the process trains)."""
    if default not in _PROCESS_CHOICE:
        _PROCESS_CHOICE[default] = auto_threads(default)
    return _PROCESS_CHOICE[default]


def auto_threads(default: int, interval: float = 0.2) -> int:
    """The cores other processes leave free, between 1 and ``default``."""
    busy = busy_cores(interval)
    if busy is None:
        return default
    free = (os.cpu_count() or 1) - busy
    return max(1, min(default, int(free + 0.5)))
