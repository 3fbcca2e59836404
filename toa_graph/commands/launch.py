"""``toa-graph launch``: vLLM servers for a config's agents, until Ctrl-C."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from typing import Any

from toa_graph.errors import RunError, UserError

DESCRIPTION = """\
Start one vLLM OpenAI server per distinct model of a config (agents sharing weights share
a server under several --served-model-name aliases), wait until all are healthy, write
the resolved config (agents pointed at the started servers) to --endpoints-out, and stay
in the foreground; Ctrl-C or SIGTERM stops every server started here (by PID).

GPU agents run `python -m vllm.entrypoints.openai.api_server` (the vllm GPU build in this
environment, or --vllm-python); `embedded://` agents run vLLM's CPU build from the
embedded cache. Servers bind 127.0.0.1. Examples:

  toa-graph launch --config model_configs/synthesis-4x8b.yaml --gpus 0,1,2,3 \\
      --port-base 8001 --gpu-memory-utilization 0.85 --endpoints-out endpoints.yaml
  toa-graph launch --config model_configs/embedded.yaml --endpoints-out endpoints.yaml
  toa-graph run "Why is the sky blue?" --config endpoints.yaml     # in another shell
  toa-graph launch --config C --model-path llama-3.1-8b=/models/llama8b --dry-run ...
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "launch",
        help="start vLLM servers for a config's agents; write the resolved config",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", required=True, help="model config YAML")
    p.add_argument("--endpoints-out", required=True, metavar="FILE", help="resolved config YAML")
    p.add_argument("--gpus", default="", help="GPU ids, e.g. 0,1,2,3 (round robin per server)")
    p.add_argument("--port-base", type=int, default=None, help="first port (default: free ports)")
    p.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        metavar="F",
        help="vLLM's --gpu-memory-utilization for every server (default: vLLM's)",
    )
    p.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        metavar="N",
        help="vLLM's --max-model-len (default: the model's)",
    )
    p.add_argument(
        "--chat-template",
        default=None,
        metavar="FILE",
        help="vLLM's --chat-template for the chat servers (default: the tokenizer's)",
    )
    p.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=1,
        metavar="K",
        help="GPUs per server (vLLM's --tensor-parallel-size)",
    )
    p.add_argument(
        "--model-path",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="weights for an agent (by agent name or served model name); default: its model",
    )
    p.add_argument(
        "--with-reward",
        action="store_true",
        help="also start vLLM's pooling runner for a 'kind: vllm' reward model",
    )
    p.add_argument("--vllm-python", default=sys.executable, help="interpreter with vllm (GPU)")
    p.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra server argument(s), e.g. --vllm-arg=--enable-prefix-caching",
    )
    p.add_argument(
        "--startup-timeout",
        type=float,
        default=1200.0,
        metavar="SECONDS",
        help="give up when a server is not ready after this long",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan and commands; start nothing"
    )
    p.set_defaults(func=launch)


def _model_paths(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--model-path expects NAME=PATH, got {item!r}")
        out[name.strip()] = path.strip()
    return out


def _raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def launch(args: argparse.Namespace) -> int:
    from toa_graph.config import ConfigError, load_config
    from toa_graph.embedded import EmbeddedError
    from toa_graph.launch import (
        Launcher,
        LaunchError,
        LaunchOptions,
        plan_servers,
        server_command,
        write_resolved_config,
    )

    try:
        cfg = load_config(args.config)
        specs = plan_servers(
            cfg,
            model_paths=_model_paths(args.model_path),
            gpus=args.gpus.split(",") if args.gpus else [],
            port_base=args.port_base,
            tensor_parallel_size=args.tensor_parallel_size,
            with_reward=args.with_reward,
        )
    except (ConfigError, LaunchError) as exc:
        raise UserError(f"error: {exc}") from exc
    opts = LaunchOptions(
        python=args.vllm_python,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        chat_template=args.chat_template,
        tensor_parallel_size=args.tensor_parallel_size,
        extra_args=list(args.vllm_arg),
        startup_timeout_s=args.startup_timeout,
    )
    for spec in specs:
        where = "CPU build (embedded)" if spec.embedded else f"GPUs {','.join(spec.gpus) or '-'}"
        print(
            f"{', '.join(spec.agents)}: {spec.model_path} as {' '.join(spec.aliases)} "
            f"on 127.0.0.1:{spec.port}, {where}",
            file=sys.stderr,
        )
        if args.dry_run and not spec.embedded:
            env = f"CUDA_VISIBLE_DEVICES={','.join(spec.gpus)} " if spec.gpus else ""
            print(f"  {env}{shlex.join(server_command(spec, opts))}", file=sys.stderr)
    if args.dry_run:
        return 0
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    out = None
    try:
        with Launcher(specs, opts) as launcher:
            out = write_resolved_config(cfg, launcher.servers, args.endpoints_out)
            print(
                f"all {len(launcher.servers)} server(s) healthy; resolved config: {out}\n"
                f"use it with: toa-graph run|serve|chat|synthesize --config {out}\n"
                "Ctrl-C (or SIGTERM) stops them.",
                file=sys.stderr,
                flush=True,
            )
            launcher.wait()
    except (LaunchError, EmbeddedError) as exc:
        raise RunError(f"error: {exc}") from exc
    except (KeyboardInterrupt, SystemExit):
        print("stopped the servers", file=sys.stderr)
        return 0
    finally:
        if out is not None:  # its URLs point at stopped servers now
            out.unlink(missing_ok=True)
    return 0
