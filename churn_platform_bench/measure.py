"""One measurement: a command run as a fresh child process, its wall time and peak memory.

Peak RSS is the larger of two readings taken every 20 ms over the child's process tree: the
kernel's high-water mark of each process (VmHWM, exact for the largest single process even between
polls), and the sum of the live processes' RSS (catches helpers running side by side). wait4's
ru_maxrss is not used: after fork and exec it still counts the parent's pages, so every child would
look at least as big as this (Dagster-importing) parent.
"""

import os
import signal
import subprocess
import time
from dataclasses import dataclass

import psutil

POLL_S = 0.02


@dataclass
class Measurement:
    wall_s: float
    peak_rss_bytes: int
    status: str  # "ok", "failed (exit N)", "timeout"
    output_tail: str = ""


def _high_water_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _poll(process: psutil.Process, high_water: dict[int, int]) -> int:
    """The tree's summed RSS now; updates each process's high-water mark."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
            high_water[proc.pid] = max(high_water.get(proc.pid, 0), _high_water_bytes(proc.pid))
        except (psutil.Error, OSError):
            pass
    return total


def measure(command: list[str], env: dict[str, str], log_path: str,
            timeout_s: float | None = None) -> Measurement:
    """Run `command` to completion (or until the timeout kills its process group)."""
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        process = psutil.Process(child.pid)
        polled, high_water, status = 0, {}, None
        while child.poll() is None:
            polled = max(polled, _poll(process, high_water))
            if timeout_s is not None and time.perf_counter() - start > timeout_s:
                os.killpg(child.pid, signal.SIGKILL)
                status = "timeout"
            time.sleep(POLL_S)
        wall = time.perf_counter() - start
    if status is None:
        status = "ok" if child.returncode == 0 else f"failed (exit {child.returncode})"
    with open(log_path, "rb") as log:
        tail = log.read()[-2000:].decode(errors="replace")
    return Measurement(wall, max(polled, *high_water.values(), 0), status, tail)
