"""Ends a Ray whose driver died without shutting it down (``actors.remote.start_watchdog``).

    python actors/watchdog.py DRIVER_PID RAY_PID...

Every half second it notes the Ray processes given and their descendants (workers, agents); once
the driver is gone it kills each of them still running (the same process: same start time) and
exits. Ray's head processes share the driver's fate, but the agents and workers they started can
outlive them by minutes. A standalone script (only psutil): it must not import alignplay or Ray.
"""

from __future__ import annotations

import sys
import time

import psutil

POLL_S = 0.5


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch(driver_pid: int, ray_pids: list[int]) -> int:
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        return 0
    seen: dict[int, psutil.Process] = {}
    while alive(driver):
        for pid in ray_pids:
            try:
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    seen.setdefault(proc.pid, proc)
            except psutil.Error:
                continue
        time.sleep(POLL_S)
    for proc in seen.values():
        try:
            if proc.is_running():  # (psutil compares start times: a reused pid is another process)
                proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(seen.values()), timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1]), [int(p) for p in sys.argv[2:]]))
