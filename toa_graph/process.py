"""Child processes we start and stop ourselves: spawn, health wait, stop by PID, free port,
log tail, file lock.

Used by :mod:`toa_graph.embedded` (the vLLM CPU servers) and :mod:`toa_graph.launch` (GPU
servers). Only processes started here are ever stopped, by PID (their own process group),
and only after checking that the PID still is the process that was recorded (its start
time in ``/proc/<pid>/stat`` and, optionally, words of its command line), so a recycled PID
is never signalled. Linux only (``/proc``, ``prctl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from toa_graph.errors import RunError

__all__ = [
    "ProcessError",
    "file_lock",
    "free_port",
    "http_ok",
    "install_sigterm_exit",
    "is_process",
    "proc_start_time",
    "spawn",
    "stop_group",
    "tail",
    "wait_ready",
]


class ProcessError(RunError):
    """A child process died or did not become ready in time (the message has its log tail)."""


def proc_start_time(pid: int) -> str:
    """Field 22 (start time) of ``/proc/<pid>/stat``; ``""`` when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # fields after the ')' that closes the command name
    return stat.rsplit(")", 1)[1].split()[19]


def is_process(pid: int, start_time: str, markers: Sequence[str] = ()) -> bool:
    """True while ``pid`` still is the process recorded with ``start_time`` (not a recycled
    PID) and its command line holds every one of ``markers`` as a whole argument."""
    if not start_time or proc_start_time(pid) != start_time:
        return False
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return all(m.encode() in cmd for m in markers)


def _parent_death_signal() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def install_sigterm_exit() -> None:
    """Turn SIGTERM into SystemExit (when nothing else handles it) so ``with`` blocks and
    atexit hooks run and stop the processes this one started."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def _exit(signum: int, frame: object) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, _exit)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """``GET url`` answered 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def tail(path: str | Path, n: int = 40) -> str:
    """The last ``n`` lines of a log file (``"(no log)"`` when it cannot be read)."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``; ``on_wait`` is called once if another process
    holds it (and we wait for it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def spawn(
    cmd: Sequence[str],
    *,
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group (pgid == pid), stdout and stderr appended to
    ``log_path``. ``die_with_parent``: it gets SIGTERM when the thread that started it dies
    (Linux ``PR_SET_PDEATHSIG``), so a killed job leaves no orphan."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            preexec_fn=_parent_death_signal if die_with_parent else None,
        )


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    what: str,
    log_path: Path,
    timeout_s: float,
    poll_s: float = 0.5,
) -> None:
    """Poll ``ready()`` until it is true. Raises :class:`ProcessError` with the log tail
    when the process exits first or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()
        if code is not None:
            raise ProcessError(
                f"{what} exited with code {code} during start-up; log {log_path}:\n{tail(log_path)}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise ProcessError(
                f"{what} not healthy after {timeout_s:.0f} s; log {log_path}:\n{tail(log_path)}"
            )
        time.sleep(poll_s)


def stop_group(pid: int, still_ours: Callable[[], bool], *, timeout_s: float = 20.0) -> bool:
    """Stop the process group led by ``pid``: SIGTERM, wait up to ``timeout_s``, then
    SIGKILL what is left. Does nothing (returns False) unless ``still_ours()`` says the PID
    still is the process we started."""
    if not still_ours():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap when it is our child
        if not still_ours():
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        # workers left in the group (and a leader that ignored SIGTERM)
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return True
