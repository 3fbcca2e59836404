"""Start vLLM servers for the agents of a config and write the resolved config.

One server per distinct model path: agents that share weights (same path) share one
server, their ``model`` names becoming ``--served-model-name`` aliases, so requests keep
the names the config already uses. ``embedded://`` agents run on vLLM's CPU build from
the embedded cache (:mod:`toa_graph.embedded`); every other agent runs on the GPU build
(``python -m vllm.entrypoints.openai.api_server``) in the interpreter given (default:
this one). Process start, health wait and stop-by-PID are :mod:`toa_graph.process`'s.

    plan = plan_servers(cfg, gpus=["0", "1"], port_base=8001)
    with Launcher(plan, options) as launcher:      # starts all, waits for health
        write_resolved_config(cfg, launcher.servers, "endpoints.yaml")
        launcher.wait()                            # until a server dies or Ctrl-C
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toa_graph import embedded, process
from toa_graph.config import ProjectConfig
from toa_graph.errors import RunError

__all__ = [
    "LaunchError",
    "LaunchOptions",
    "Launcher",
    "ServerSpec",
    "plan_servers",
    "resolved_config",
    "server_command",
    "write_resolved_config",
]

REWARD_SERVER = "reward"
"""``ServerSpec.agents`` entry that marks the reward model's pooling server."""


class LaunchError(RunError):
    """The plan is impossible or a server failed (the message names which and why)."""


@dataclass
class ServerSpec:
    """One vLLM server to start."""

    model_path: str
    """Weights: a local directory or a hub id (GPU); the model key (embedded)."""
    aliases: list[str]
    """``--served-model-name`` values: the agents' ``model`` names."""
    agents: list[str]
    """Agents served (``"reward"`` for the reward model's pooling server)."""
    port: int
    gpus: list[str] = field(default_factory=list)
    """``CUDA_VISIBLE_DEVICES`` for this server; empty: leave the environment as it is."""
    embedded: bool = False
    pooling: bool = False


@dataclass
class LaunchOptions:
    """Server flags shared by every GPU server (and the few the CPU build takes)."""

    python: str = sys.executable
    """Interpreter with the GPU ``vllm`` installed."""
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    chat_template: str | None = None
    tensor_parallel_size: int = 1
    extra_args: list[str] = field(default_factory=list)
    startup_timeout_s: float = 1200.0
    log_dir: Path | None = None


def _agent_key(name: str, model: str, paths: Mapping[str, str]) -> str:
    return paths.get(name) or paths.get(model) or model


def plan_servers(
    cfg: ProjectConfig,
    *,
    model_paths: Mapping[str, str] | None = None,
    gpus: Sequence[str] = (),
    port_base: int | None = None,
    tensor_parallel_size: int = 1,
    with_reward: bool = False,
) -> list[ServerSpec]:
    """Which servers to start for ``cfg``, in agent order.

    ``model_paths``: agent name (or served model name) -> weights path; default: the
    agent's ``model``. ``gpus``: device ids handed out ``tensor_parallel_size`` at a time
    per GPU server, round robin (more servers than groups share GPUs: lower
    ``--gpu-memory-utilization`` then). ``port_base``: ports ``port_base``,
    ``port_base + 1``, ... (default: free ports). ``with_reward``: also start a pooling
    server for a ``kind: vllm`` reward model.
    """
    paths = dict(model_paths or {})
    known = {a.name for a in cfg.agents} | {a.model for a in cfg.agents}
    if with_reward and getattr(cfg.reward, "kind", None) == "vllm":
        known.add(cfg.reward.model)  # type: ignore[union-attr]
    unknown = sorted(set(paths) - known)
    if unknown:
        raise LaunchError(f"--model-path names no agent: {unknown}; agents: {sorted(known)}")
    specs: dict[tuple[bool, str], ServerSpec] = {}
    for a in cfg.agents:
        key = embedded.embedded_key(a)
        if key is not None:
            spec_key = (True, key)
            path = key
        elif len(a.urls) > 1:
            raise LaunchError(
                f"agent {a.name!r} lists {len(a.urls)} base_urls (replicas): launch starts one "
                "server per model; give one base_url (the launched URL replaces it)"
            )
        else:
            path = _agent_key(a.name, a.model, paths)
            spec_key = (False, path)
        spec = specs.get(spec_key)
        if spec is None:
            spec = specs[spec_key] = ServerSpec(
                model_path=path, aliases=[], agents=[], port=0, embedded=spec_key[0]
            )
        if a.model not in spec.aliases:
            spec.aliases.append(a.model)
        spec.agents.append(a.name)
    out = list(specs.values())
    if with_reward:
        r = cfg.reward
        if getattr(r, "kind", None) != "vllm":
            raise LaunchError(
                f"--with-reward starts vLLM's pooling runner for a 'kind: vllm' reward; "
                f"this config's reward is kind {getattr(r, 'kind', '?')!r}"
            )
        model = r.model  # type: ignore[union-attr]
        out.append(
            ServerSpec(
                model_path=paths.get(model, model),
                aliases=[model],
                agents=[REWARD_SERVER],
                port=0,
                pooling=True,
            )
        )
    tp = max(1, tensor_parallel_size)
    gpu_list = [g.strip() for g in gpus if g.strip()]
    if gpu_list and len(gpu_list) < tp:
        raise LaunchError(f"--tensor-parallel-size {tp} needs {tp} GPUs; --gpus has {gpu_list}")
    groups = [gpu_list[i : i + tp] for i in range(0, len(gpu_list) - tp + 1, tp)]
    k = 0
    for i, spec in enumerate(out):
        spec.port = port_base + i if port_base else process.free_port()
        if not spec.embedded and groups:
            spec.gpus = groups[k % len(groups)]
            k += 1
    return out


def server_command(spec: ServerSpec, opts: LaunchOptions) -> list[str]:
    """The GPU server's command line (embedded servers are built by embedded.start_server)."""
    cmd = [
        opts.python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", spec.model_path,
        "--served-model-name", *spec.aliases,
        "--host", "127.0.0.1",
        "--port", str(spec.port),
        "--uvicorn-log-level", "warning",
    ]  # fmt: skip
    if spec.pooling:
        cmd += ["--runner", "pooling"]
    if opts.gpu_memory_utilization is not None:
        cmd += ["--gpu-memory-utilization", f"{opts.gpu_memory_utilization:g}"]
    if opts.max_model_len is not None:
        cmd += ["--max-model-len", str(opts.max_model_len)]
    if opts.chat_template and not spec.pooling:
        cmd += ["--chat-template", opts.chat_template]
    if opts.tensor_parallel_size > 1:
        cmd += ["--tensor-parallel-size", str(opts.tensor_parallel_size)]
    return cmd + list(opts.extra_args)


def _gpu_env(spec: ServerSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    if spec.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(spec.gpus)
    return env


def _check_vllm(python: str) -> None:
    if Path(python).resolve() == Path(sys.executable).resolve():
        if importlib.util.find_spec("vllm") is None:
            raise LaunchError(
                "vllm is not installed in this environment: pip install 'toa-graph[vllm]' "
                "(GPU build), or pass --vllm-python /path/to/venv/bin/python"
            )
    elif not Path(python).exists():
        raise LaunchError(f"--vllm-python {python}: no such interpreter")


class Launcher:
    """Starts the planned servers (all healthy, or none left running) and stops them."""

    def __init__(self, specs: Sequence[ServerSpec], opts: LaunchOptions | None = None) -> None:
        self.specs = list(specs)
        self.opts = opts or LaunchOptions()
        self.servers: list[tuple[ServerSpec, embedded.ServerInfo]] = []

    def start(self) -> Launcher:
        if any(not s.embedded for s in self.specs):
            _check_vllm(self.opts.python)
        log_dir = self.opts.log_dir or embedded.cache_dir() / "logs"
        try:
            for spec in self.specs:
                if spec.embedded:
                    extra = (
                        ["--chat-template", self.opts.chat_template]
                        if self.opts.chat_template
                        else []
                    )
                    info = embedded.start_server(
                        spec.model_path,
                        spec.aliases,
                        port=spec.port,
                        max_model_len=self.opts.max_model_len or 4096,
                        startup_timeout_s=self.opts.startup_timeout_s,
                        extra_args=extra,
                        die_with_parent=True,
                    )
                else:
                    stamp = time.strftime("%Y%m%d-%H%M%S")
                    name = Path(spec.model_path).name or "model"
                    info = embedded.spawn_server(
                        server_command(spec, self.opts),
                        model=spec.model_path,
                        port=spec.port,
                        aliases=spec.aliases,
                        log_path=log_dir / f"vllm-{name}-{spec.port}-{stamp}.log",
                        env=_gpu_env(spec),
                        startup_timeout_s=self.opts.startup_timeout_s,
                        die_with_parent=True,
                    )
                self.servers.append((spec, info))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every server started here (by PID, after checking it still is ours)."""
        while self.servers:
            _, info = self.servers.pop()
            embedded.stop_server(info)

    def dead(self) -> list[tuple[ServerSpec, embedded.ServerInfo]]:
        return [(s, i) for s, i in self.servers if not embedded.server_alive(i)]

    def wait(self, poll_s: float = 2.0) -> None:
        """Block until a server dies (raises :class:`LaunchError`) or an interrupt."""
        while True:
            gone = self.dead()
            if gone:
                spec, info = gone[0]
                raise LaunchError(
                    f"vLLM server for {spec.model_path} (agents {spec.agents}, pid {info.pid}) "
                    f"exited; log {info.log}:\n{process.tail(info.log)}"
                )
            time.sleep(poll_s)

    def __enter__(self) -> Launcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def resolved_config(
    cfg: ProjectConfig, servers: Sequence[tuple[ServerSpec, embedded.ServerInfo]]
) -> dict[str, Any]:
    """``cfg`` as a YAML-ready dict with every launched agent (and reward) pointed at its
    server; loads back with :func:`toa_graph.config.load_config`."""
    url_of = {a: info.base_url for spec, info in servers for a in spec.agents}
    agents = []
    for a in cfg.agents:
        data = a.model_dump(mode="json", exclude_defaults=True)
        data.pop("base_urls", None)
        data["base_url"] = url_of.get(a.name, a.urls[0])
        agents.append({"name": data.pop("name"), "model": data.pop("model"), **data})
    reward = cfg.reward.model_dump(mode="json", exclude_defaults=True)
    reward["kind"] = cfg.reward.kind
    if REWARD_SERVER in url_of:
        reward["base_url"] = url_of[REWARD_SERVER]
    out: dict[str, Any] = {"agents": agents, "reward": reward}
    method = cfg.method.model_dump(mode="json", exclude_defaults=True)
    if method:
        out["method"] = method
    return out


def write_resolved_config(
    cfg: ProjectConfig,
    servers: Sequence[tuple[ServerSpec, embedded.ServerInfo]],
    path: str | os.PathLike[str],
) -> Path:
    """Write :func:`resolved_config` atomically, with the servers listed in a header."""
    lines = [f"# Written by toa-graph launch from {cfg.source or 'a config'}; valid while it runs."]
    for spec, info in servers:
        gpus = f" (GPUs {','.join(spec.gpus)})" if spec.gpus else ""
        lines.append(
            f"# pid {info.pid}: {spec.model_path} as {' '.join(spec.aliases)} on "
            f"{info.base_url}{gpus}; log {info.log}"
        )
    body = yaml.safe_dump(resolved_config(cfg, servers), sort_keys=False, allow_unicode=True)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n" + body)
    tmp.replace(out)
    return out
