"""``toa-graph serve-reward``: one batched reward server for synthesis runs and RL trainers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from toa_graph.errors import UserError

DESCRIPTION = """\
Load the config's reward once and serve it to every client through one dynamic batcher:

  POST /v1/score     the project's API ('kind: remote' rewards, the verl and TRL adapters)
  POST /get_reward   OpenRLHF's remote reward API (query, prompts, labels)
  GET  /health       503 while the reward loads
  GET  /metrics      requests, batch sizes, queue time, fallbacks

Examples:

  toa-graph serve-reward --config reward.yaml --port 8700
  toa-graph serve-reward --config reward.yaml --policy-tokenizer ./policy   # OpenRLHF
  toa-graph serve-reward --verl-path            # the verl reward file to give verl

See docs/reward-server.md for the trainer snippets.
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve-reward",
        help="batched reward server (own API, OpenRLHF /get_reward, verl and TRL adapters)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=None, help="YAML with a 'reward:' section")
    p.add_argument("--host", default="127.0.0.1", help="bind address")
    p.add_argument("--port", type=int, default=8700, help="port to listen on")
    p.add_argument(
        "--api-key-env", default=None, metavar="NAME",
        help="env var holding the bearer token clients must send (default: no auth)",
    )  # fmt: skip
    p.add_argument("--max-batch-size", type=int, default=64, help="most items in one batch")
    p.add_argument(
        "--max-wait-ms", type=float, default=10.0,
        help="how long the first waiting item waits for others before its batch is scored",
    )  # fmt: skip
    p.add_argument(
        "--idle-ms", type=float, default=1.0,
        help="score a batch early once no item arrived for this long (0: wait --max-wait-ms)",
    )  # fmt: skip
    p.add_argument(
        "--max-queue", type=int, default=4096, help="items queued before clients get 429"
    )
    p.add_argument(
        "--max-text-chars", type=int, default=100_000, help="longest text a request may send"
    )
    p.add_argument(
        "--fallback-score", type=float, default=0.0,
        help="/get_reward's score for an item the reward failed to score (logged, counted)",
    )  # fmt: skip
    p.add_argument(
        "--policy-tokenizer", default=None, metavar="DIR",
        help="local tokenizer of the policy: its chat template turns OpenRLHF queries "
        "back into (messages, response)",
    )  # fmt: skip
    p.add_argument(
        "--verl-path", action="store_true", help="print the verl reward file's path and exit"
    )
    p.set_defaults(func=serve_reward)


def serve_reward(args: argparse.Namespace) -> int:
    from toa_graph.reward_server import verl_reward_path

    if args.verl_path:
        print(verl_reward_path())
        return 0
    if not args.config:
        raise UserError("serve-reward needs --config (a YAML file with a 'reward:' section)")
    try:
        import uvicorn

        from toa_graph.reward_server.app import create_reward_app
        from toa_graph.reward_server.serving import (
            RewardServerSettings,
            RewardServing,
            load_reward_config,
        )
        from toa_graph.reward_server.template import PolicyTemplate
    except ImportError as exc:
        raise UserError(
            f"serve-reward needs the server extra: pip install 'toa-graph[server]' ({exc})"
        ) from exc
    from toa_graph.commands.serve import bearer_token

    api_key = bearer_token(args.api_key_env, args.host, "use the reward model")
    reward_cfg, agents = load_reward_config(args.config)
    template = None
    if args.policy_tokenizer:
        try:
            template = PolicyTemplate.load(args.policy_tokenizer)
        except Exception as exc:
            raise UserError(f"--policy-tokenizer {args.policy_tokenizer}: {exc}") from exc
    settings = RewardServerSettings(
        api_key=api_key, max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms,
        idle_ms=args.idle_ms or None, max_queue=args.max_queue, max_text_chars=args.max_text_chars,
        fallback_score=args.fallback_score,
    )  # fmt: skip
    serving = RewardServing(settings, template=template)

    async def load(s: RewardServing) -> None:
        await s.load(reward_cfg, agents)

    app = create_reward_app(serving, load)
    print(f"toa-graph serve-reward ({reward_cfg.kind}) on http://{args.host}:{args.port} "
          f"(auth: {'bearer token' if api_key else 'none'})", file=sys.stderr, flush=True)  # fmt: skip
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0
