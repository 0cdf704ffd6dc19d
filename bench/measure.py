"""Wall time and peak memory of a command, counting every process it starts (Linux /proc sampling).

``resource.getrusage(RUSAGE_CHILDREN)`` reports the largest single descendant ever waited for by *this*
process, so an earlier big child (or a pool of workers whose memory adds up) makes it wrong; sampling the
summed RSS of the command's process tree every 50 ms is what a user sees in ``top``.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            kids.extend(int(k) for k in text)
    except OSError:
        pass
    return kids


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_rss_mb(pid: int) -> float:
    """Summed resident memory (MB) of ``pid`` and all its descendants now."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += _rss_kb(p)
        stack.extend(_children(p))
    return total / 1024


def run_measured(cmd: list[str], cwd: Path | None = None, interval: float = 0.05) -> tuple[float, float]:
    """Run ``cmd`` (stdout discarded, failure raises); return wall seconds and peak summed RSS in MB."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_mb(proc.pid))
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, stderr=err)
    return wall, peak
