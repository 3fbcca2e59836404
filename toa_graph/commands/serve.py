"""``toa-graph serve``: the methods behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from typing import Any

from toa_graph.errors import UserError

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Serve every sampling method as an OpenAI-compatible chat model: POST
/v1/chat/completions (plain or stream: true), GET /v1/models, GET /health. The request's
`model` picks the method ("toa", "moa", ...; "default" = --method; "toa@32" also sets
the budget); the whole conversation is the prompt; the answer is the best-rewarded
sample, with an `x_toa` field (best agent, reward, samples). Extra request fields:
budget, reference, context (other knobs).

Without --config the embedded default is started (and stopped at exit). Examples:

  toa-graph serve --port 8000
  TOA_KEY=secret toa-graph serve --config endpoints.yaml --api-key-env TOA_KEY

  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="secret")
  client.chat.completions.create(model="toa", messages=[...], extra_body={"budget": 16})
"""


def add_parser(sub: Any) -> None:
    from toa_graph.commands import budget_help_text, settings_parser

    p = sub.add_parser(
        "serve",
        help="OpenAI-compatible server (/v1/chat/completions, /v1/models)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[
            settings_parser(
                method_help="default method, for model 'default' (default: the config's)",
                budget_help=budget_help_text("request"),
                set_what="default context knobs (each method takes those it has)",
                keep_help="leave embedded servers running at exit",
            )
        ],
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument(
        "--api-key-env",
        default=None,
        metavar="NAME",
        help="env var holding the bearer token clients must send (default: no auth)",
    )
    p.add_argument("--max-budget", type=int, default=512, help="largest budget a request may ask")
    p.add_argument(
        "--max-body-bytes", type=int, default=1 << 20, help="larger request bodies are refused"
    )
    p.add_argument(
        "--max-concurrent-runs", type=int, default=32, help="method runs at once; others wait"
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="give up on a request's method run after this long (default: no limit)",
    )
    p.set_defaults(func=serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bearer_token(api_key_env: str | None, host: str, exposes: str) -> str | None:
    """The token ``--api-key-env`` names (an unset variable is an error); warns when
    ``host`` is not loopback and there is no token (anyone reaching the port could
    ``exposes``)."""
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {api_key_env}: that env var is not set")
    if not _is_loopback(host) and not api_key:
        print(
            f"warning: binding {host} without --api-key-env: anyone who can reach this "
            f"port can {exposes}",
            file=sys.stderr,
        )
    return api_key


def serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from toa_graph.server import build_app
        from toa_graph.server.serving import ServerSettings, ServingError
    except ImportError as exc:
        raise UserError(
            f"toa-graph serve needs the server extra: pip install 'toa-graph[server]' ({exc})"
        ) from exc
    from toa_graph.commands import check_budget_flag, parse_knobs, project_config
    from toa_graph.registry import RunSettings
    from toa_graph.rewards import build_reward

    api_key = bearer_token(args.api_key_env, args.host, "spend your endpoints' compute")
    check_budget_flag(args.budget)  # a bad flag fails before any server starts
    with project_config(args.config, keep_servers=args.keep_servers) as cfg:
        # --set knobs serve every method that has them (the server checks that each
        # belongs to one); the default method's settings are resolved once, here
        knobs = {**cfg.method.context, **parse_knobs(args.set, args)}
        if args.budget is not None:
            knobs["budget"] = args.budget
        default = RunSettings.resolve(
            cfg,
            method=args.method,
            knobs=RunSettings.own_knobs(args.method or cfg.method.name, knobs),
        )
        settings = ServerSettings(
            api_key=api_key,
            default_method=default.method,
            default_context=knobs,
            default_options={cfg.method.name: dict(cfg.method.options)},
            max_budget=args.max_budget,
            max_body_bytes=args.max_body_bytes,
            max_concurrent_runs=args.max_concurrent_runs,
            request_timeout_s=args.request_timeout,
        )
        try:
            app = build_app(
                cfg.agents, build_reward(cfg.reward, agents=cfg.agents), settings=settings
            )
        except (ValueError, ServingError) as exc:  # default knobs or options the methods lack
            raise UserError(f"bad method settings: {exc}") from exc
        print(
            f"toa-graph serving {', '.join(app.state.serving.methods)} on "
            f"http://{args.host}:{args.port}/v1 (auth: {'bearer token' if api_key else 'none'})",
            file=sys.stderr,
            flush=True,
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
