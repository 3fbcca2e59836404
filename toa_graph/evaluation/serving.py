"""Serve a local checkpoint with vLLM for the length of an evaluation, then stop it.

On a machine without a GPU the checkpoint runs on vLLM's CPU build from the embedded
cache (:mod:`toa_graph.embedded`); with a GPU, on the vLLM installed in this interpreter
(as ``toa-graph launch`` does). The server binds 127.0.0.1, runs in its own process
group, gets SIGTERM if this process dies, and is stopped on exit, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from toa_graph.distill_errors import EvalError

__all__ = ["served_checkpoint"]


def _has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """SIGTERM raises SystemExit inside the block, so the server is stopped on a kill."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def served_checkpoint(
    path: str | Path,
    *,
    name: str | None = None,
    gpu: bool | None = None,
    max_model_len: int = 2048,
    startup_timeout_s: float = 900.0,
    threads: int | None = None,
) -> Iterator[tuple[str, str]]:
    """Yield ``(base_url, served model name)`` of a vLLM server for a checkpoint directory."""
    from toa_graph import embedded, process

    ckpt = Path(path).expanduser().resolve()
    if not (ckpt / "config.json").is_file():
        raise EvalError(f"checkpoint {ckpt} has no config.json (a model directory is needed)")
    served = name or ckpt.name
    use_gpu = _has_gpu() if gpu is None else gpu
    port = process.free_port()
    cache = embedded.cache_dir()
    logs = cache / "logs"
    log_path = logs / f"vllm-eval-{served}-{port}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    args = [
        "-m", "vllm.entrypoints.openai.api_server", "--model", str(ckpt),
        "--served-model-name", served, "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(max_model_len), "--uvicorn-log-level", "warning",
    ]  # fmt: skip
    if use_gpu:
        cmd = [sys.executable, *args, "--dtype", "bfloat16"]
        env = None
    else:
        python = embedded.prepare().python
        cmd = [str(python), *args, "--dtype", "bfloat16", "--enforce-eager"]
        env = embedded.cpu_server_env(cache, threads=threads)
    with _sigterm_as_exit():
        # a server that dies or never gets healthy raises EmbeddedError (a RunError) with
        # its log tail
        info = embedded.spawn_server(
            cmd, model=served, port=port, aliases=[served], log_path=log_path, env=env,
            cwd=cache if not use_gpu else None, startup_timeout_s=startup_timeout_s,
            die_with_parent=True,
        )  # fmt: skip
        try:
            yield f"http://127.0.0.1:{port}/v1", served
        finally:
            embedded.stop_server(info)
