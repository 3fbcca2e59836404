"""A stand-in for ``python -m vllm.entrypoints.openai.api_server`` (launch tests).

Takes the flags ``toa-graph launch`` passes, serves /health, /v1/models (the
--served-model-name aliases, plus the argv and CUDA_VISIBLE_DEVICES it saw) and a
canned /v1/chat/completions on 127.0.0.1:--port. Put ``tests/fake_vllm`` on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--served-model-name", nargs="+", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument(
        "--startup-delay", type=float, default=float(os.environ.get("FAKE_VLLM_DELAY", "0"))
    )
    args, _unknown = ap.parse_known_args()
    names = args.served_model_name or [args.model]
    time.sleep(args.startup_delay)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({})

    async def models(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": n, "object": "model", "root": args.model} for n in names],
                "argv": sys.argv[1:],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            }
        )

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        text = f"{body['model']} on {args.model} says hi"
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
            }
        )

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
