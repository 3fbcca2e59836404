"""Running the embedded stack: vLLM servers started, health-checked and stopped by PID,
servers kept running between commands (``servers.json``), and :class:`EmbeddedStack`,
which resolves a config's ``embedded://`` agents to running servers."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toa_graph import process
from toa_graph.config import AgentConfig, ProjectConfig, load_config
from toa_graph.embedded.prepare import (
    EMBEDDED_SCHEME,
    MODELS,
    EmbeddedError,
    Prepared,
    _file_lock,
    _log,
    cache_dir,
    default_config_path,
    prepare,
)

_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass
class ServerInfo:
    """A vLLM server started by this module (recorded in ``servers.json`` when kept)."""

    model: str
    pid: int
    port: int
    aliases: list[str]
    log: str
    proc_start: str = ""
    """``/proc/<pid>/stat`` start time: guards against a recycled PID."""
    started_at: float = field(default_factory=time.time)
    kept: bool = False

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def _is_our_server(info: ServerInfo) -> bool:
    """True when ``info.pid`` is still the vLLM server process that was recorded."""
    return process.is_process(info.pid, info.proc_start, (_SERVER_MODULE, str(info.port)))


def _healthy(port: int, timeout: float = 2.0) -> bool:
    return process.http_ok(f"http://127.0.0.1:{port}/health", timeout)


def _served_models(port: int) -> set[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            return {m["id"] for m in json.load(r).get("data", [])}
    except (urllib.error.URLError, OSError, TimeoutError, ValueError):
        return set()


def cpu_server_env(
    cache: Path, kv_cache_gib: float = 1.0, threads: int | None = None
) -> dict[str, str]:
    """The environment of a vLLM CPU server from the embedded venv: offline, its caches under
    ``cache``, ``kv_cache_gib`` of KV cache, ``threads`` OpenMP threads."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_CACHE_ROOT=str(cache / "vllm-cache"),
        TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor-cache"),
        VLLM_CPU_KVCACHE_SPACE=f"{kv_cache_gib:g}",
        PYTHONUNBUFFERED="1",
    )
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    # The server's own venv must win over whatever venv launched us.
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(var, None)
    return env


def start_server(
    model: str,
    aliases: Sequence[str],
    *,
    cache: Path | None = None,
    port: int | None = None,
    kv_cache_gib: float = 1.0,
    max_model_len: int = 4096,
    startup_timeout_s: float = 600.0,
    threads: int | None = None,
    extra_args: Sequence[str] = (),
    prepared: Prepared | None = None,
    die_with_parent: bool = False,
) -> ServerInfo:
    """Start one vLLM CPU server for ``model`` (a key of :data:`MODELS`) and wait for /health.

    Binds 127.0.0.1 on a free port; the server runs in its own process group so that
    :func:`stop_server` can end it and its workers. Raises :class:`EmbeddedError` with the
    tail of the server log if it dies or is not healthy within ``startup_timeout_s``.
    ``die_with_parent``: the server gets SIGTERM when the thread that started it dies
    (Linux ``PR_SET_PDEATHSIG``), so a killed job leaves no orphan; only from the main thread.
    """
    cache = cache or cache_dir()
    prep = (
        prepared
        if prepared is not None and model in prepared.models
        else prepare([model], cache=cache)
    )
    port = port or process.free_port()
    logs = cache / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"vllm-{model}-{port}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    names = list(dict.fromkeys(aliases)) or [model]
    cmd = [
        str(prep.python),
        "-m",
        _SERVER_MODULE,
        "--model",
        str(prep.models[model]),
        "--served-model-name",
        *names,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enforce-eager",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        str(max_model_len),
        "--uvicorn-log-level",
        "warning",
        *extra_args,
    ]
    return spawn_server(
        cmd,
        model=model,
        port=port,
        aliases=names,
        log_path=log_path,
        env=cpu_server_env(cache, kv_cache_gib, threads),
        cwd=cache,
        startup_timeout_s=startup_timeout_s,
        die_with_parent=die_with_parent,
    )


def spawn_server(
    cmd: Sequence[str],
    *,
    model: str,
    port: int,
    aliases: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    startup_timeout_s: float = 600.0,
    die_with_parent: bool = False,
) -> ServerInfo:
    """Start a vLLM OpenAI server command (``python -m vllm.entrypoints.openai.api_server
    ... --port PORT``, any build) in its own process group, logging to ``log_path``, and
    wait until ``/health`` answers and ``/v1/models`` lists every alias.

    Shared by :func:`start_server` (CPU build) and ``toa-graph launch`` (GPU build). The
    returned :class:`ServerInfo` is what :func:`stop_server` needs. Raises
    :class:`EmbeddedError` with the log tail if the server dies or is not healthy in
    time; an interrupt while waiting stops the server before propagating.
    """
    names = list(aliases)
    t0 = time.monotonic()
    _log(f"starting vLLM for {model} as {names} on 127.0.0.1:{port} (log: {log_path})")
    proc = process.spawn(cmd, log_path=log_path, env=env, cwd=cwd, die_with_parent=die_with_parent)
    info = ServerInfo(
        model=model,
        pid=proc.pid,
        port=port,
        aliases=names,
        log=str(log_path),
        proc_start=process.proc_start_time(proc.pid),
    )
    try:
        process.wait_ready(
            proc,
            lambda: _healthy(port) and set(names) <= _served_models(port),
            what=f"vLLM server for {model}",
            log_path=log_path,
            timeout_s=startup_timeout_s,
        )
    except process.ProcessError as exc:
        stop_server(info)
        raise EmbeddedError(str(exc)) from None
    except BaseException:
        stop_server(info)
        raise
    _log(
        f"vLLM for {model} healthy on port {port} after {time.monotonic() - t0:.1f} s (pid {proc.pid})"
    )
    return info


def server_alive(info: ServerInfo) -> bool:
    """True while ``info.pid`` still is the recorded vLLM server (not a recycled PID)."""
    return _is_our_server(info)


def stop_server(info: ServerInfo, *, timeout_s: float = 20.0) -> bool:
    """Stop a server started here: SIGTERM to its process group, then SIGKILL.

    Does nothing (returns False) unless the PID still is the recorded vLLM server.
    """
    if not process.stop_group(info.pid, lambda: _is_our_server(info), timeout_s=timeout_s):
        return False
    _log(f"stopped vLLM for {info.model} (pid {info.pid}, port {info.port})")
    return True


# ------------------------------------------------------------------------------ kept servers


def _state_path(cache: Path) -> Path:
    return cache / "servers.json"


def _read_state(cache: Path) -> list[ServerInfo]:
    try:
        raw = json.loads(_state_path(cache).read_text())
    except (OSError, ValueError):
        return []
    out = []
    for item in raw.get("servers", []):
        with contextlib.suppress(TypeError):
            out.append(ServerInfo(**item))
    return out


def _write_state(cache: Path, servers: Sequence[ServerInfo]) -> None:
    path = _state_path(cache)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"servers": [asdict(s) for s in servers]}, indent=2))
    tmp.replace(path)


def _live_kept(cache: Path) -> list[ServerInfo]:
    """Recorded servers that are still ours and healthy; prunes the rest from the file."""
    servers = _read_state(cache)
    live = [s for s in servers if _is_our_server(s) and _healthy(s.port)]
    if len(live) != len(servers):
        _write_state(cache, live)
    return live


def status(cache: Path | None = None) -> list[ServerInfo]:
    """The kept servers that are running and healthy."""
    cache = cache or cache_dir()
    with _file_lock(cache / ".servers.lock", "starting servers"):
        return _live_kept(cache)


def stop_all(cache: Path | None = None) -> int:
    """Stop every kept server recorded in ``servers.json`` (only those still ours)."""
    cache = cache or cache_dir()
    n = 0
    with _file_lock(cache / ".servers.lock", "starting servers"):
        for s in _read_state(cache):
            n += stop_server(s)
        _write_state(cache, [])
    return n


# ------------------------------------------------------------------------------ the stack


def embedded_key(agent: AgentConfig) -> str | None:
    urls = agent.urls
    if len(urls) == 1 and urls[0].startswith(EMBEDDED_SCHEME):
        return urls[0][len(EMBEDDED_SCHEME) :].strip("/")
    return None


class EmbeddedStack:
    """Prepared models + running vLLM CPU servers for the embedded agents of a config.

    ``config``: a path or a :class:`ProjectConfig` whose agents use
    ``base_url: embedded://<model key>`` (default: ``model_configs/embedded.yaml``).
    Agents sharing a model key share one server (their ``model`` names become aliases).

    ``keep``: leave the servers running at exit and record them in ``servers.json``.
    ``reuse``: use recorded, healthy servers that already serve the needed aliases (they
    are never stopped by this stack unless it started them).

    >>> with EmbeddedStack() as stack:       # doctest: +SKIP
    ...     cfg = stack.config()
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | ProjectConfig | None = None,
        *,
        keep: bool = False,
        reuse: bool = True,
        cache: str | os.PathLike[str] | None = None,
        kv_cache_gib: float = 1.0,
        max_model_len: int = 4096,
        startup_timeout_s: float = 600.0,
    ) -> None:
        if config is None or not isinstance(config, ProjectConfig):
            config = load_config(config or default_config_path())
        self._template = config
        self.keep = keep
        self.reuse = reuse
        self.cache = Path(cache) if cache else cache_dir()
        self.kv_cache_gib = kv_cache_gib
        self.max_model_len = max_model_len
        self.startup_timeout_s = startup_timeout_s
        self.servers: dict[str, ServerInfo] = {}
        self._owned: list[ServerInfo] = []
        self._atexit = False

    def needed(self) -> dict[str, list[str]]:
        """Model key -> served aliases, from the config's ``embedded://`` agents."""
        out: dict[str, list[str]] = {}
        for a in self._template.agents:
            key = embedded_key(a)
            if key is not None:
                if key not in MODELS:
                    raise EmbeddedError(
                        f"agent {a.name!r}: unknown embedded model {key!r}; known: {sorted(MODELS)}"
                    )
                out.setdefault(key, []).append(a.model)
        return out

    def start(self) -> EmbeddedStack:
        needed = self.needed()
        if not needed:
            return self
        prepared = prepare(list(needed), cache=self.cache)
        with _file_lock(self.cache / ".servers.lock", "starting servers"):
            kept = _live_kept(self.cache) if (self.reuse or self.keep) else []
            for key, aliases in needed.items():
                if key in self.servers:
                    continue
                match = next(
                    (s for s in kept if s.model == key and set(aliases) <= set(s.aliases)), None
                )
                if match is not None and self.reuse:
                    _log(f"reusing kept vLLM for {key} on port {match.port} (pid {match.pid})")
                    self.servers[key] = match
                    continue
                info = start_server(
                    key,
                    aliases,
                    cache=self.cache,
                    kv_cache_gib=self.kv_cache_gib,
                    max_model_len=self.max_model_len,
                    startup_timeout_s=self.startup_timeout_s,
                    prepared=prepared,
                    die_with_parent=not self.keep
                    and threading.current_thread() is threading.main_thread(),
                )
                self.servers[key] = info
                if self.keep:
                    info.kept = True
                    kept.append(info)
                    _write_state(self.cache, kept)
                else:
                    self._owned.append(info)
        if self._owned and not self._atexit:
            atexit.register(self.stop)
            process.install_sigterm_exit()
            self._atexit = True
        return self

    def stop(self) -> None:
        """Stop the servers this stack started (not kept ones, not reused ones)."""
        while self._owned:
            info = self._owned.pop()
            stop_server(info)
            self.servers = {k: v for k, v in self.servers.items() if v is not info}

    def config(self) -> ProjectConfig:
        """The config with every ``embedded://`` agent pointed at its running server."""
        agents = []
        for a in self._template.agents:
            key = embedded_key(a)
            if key is None:
                agents.append(a)
                continue
            if key not in self.servers:
                raise EmbeddedError("EmbeddedStack.config(): call start() first (or use `with`)")
            agents.append(a.model_copy(update={"base_url": self.servers[key].base_url}))
        return self._template.model_copy(update={"agents": agents})

    def __enter__(self) -> EmbeddedStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------ CLI
