"""This process's memory figures from ``/proc/self/status`` (Linux), for the benchmarks."""

from __future__ import annotations

from pathlib import Path


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` size field in MB (``VmRSS``: resident now; ``VmHWM``: peak
    resident, reset by exec); NaN where the field (or the file) is missing."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return float("nan")
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    """This process's resident memory now, in MB."""
    return status_mb("VmRSS")
