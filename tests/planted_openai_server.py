"""An OpenAI-compatible chat server whose replies are planted: ``--answers FILE`` maps a
question (found anywhere in the last user message) to the reply text; the reply
``__error__`` answers HTTP 500, an unknown question gets an empty reply. Prints one JSON
line with its port once it listens (start it with :func:`tests.fake_servers.spawn`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fake_openai_server import completion_body


def make_app(answers: dict[str, str]) -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        last = str(body["messages"][-1]["content"])
        reply = next((a for q, a in answers.items() if q in last), "")
        if reply == "__error__":
            return JSONResponse({"error": {"message": "planted failure"}}, status_code=500)
        choice = {"index": 0, "message": {"role": "assistant", "content": reply},
                  "finish_reason": "stop", "logprobs": None}  # fmt: skip
        return JSONResponse(
            completion_body("c", body.get("model", "planted"), [choice], 1, len(reply.split()))
        )

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "planted", "object": "model"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


def main() -> None:
    import uvicorn

    ap = argparse.ArgumentParser()
    ap.add_argument("--answers", required=True)
    args = ap.parse_args()
    with open(args.answers, encoding="utf-8") as f:
        answers = json.load(f)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(make_app(answers), log_level="warning", lifespan="off"))

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        print(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True)
        await task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
