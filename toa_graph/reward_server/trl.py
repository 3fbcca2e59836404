"""A TRL reward function that scores through a running ``serve-reward``.

TRL's ``GRPOTrainer`` calls ``reward_func(prompts=..., completions=..., **columns)`` (async
functions included) and skips an item whose reward is ``None``; this class returns
``None`` for every item the server could not score. It holds only its settings, so it
pickles (TRL may ship it to other processes); the HTTP client is made on first use.

    from toa_graph.reward_server.trl import ServerRewardFunction
    reward = ServerRewardFunction("http://127.0.0.1:8700", reference_column="answer")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], args=..., train_dataset=...)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from toa_graph.rewards.remote import _HTTPUser, post_items

__all__ = ["ServerRewardFunction"]


def _text(completion: Any) -> str:
    """A TRL completion as text: a string, or the contents of its assistant messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


class ServerRewardFunction(_HTTPUser):
    """``async (prompts, completions, **columns) -> list[float | None]``.

    Args:
        url: the server's base URL (``http://127.0.0.1:8700``).
        reference_column: the dataset column holding each row's gold answer / reference
            (``None``: no references).
        api_key_env: env var holding the server's bearer token.
        name: shown by TRL in its logs (``rewards/<name>/mean``).
    """

    def __init__(
        self,
        url: str,
        *,
        reference_column: str | None = "answer",
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        name: str = "toa_reward_server",
    ) -> None:
        self.url = url
        self.reference_column = reference_column
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.__name__ = name

    async def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> list[float | None]:
        refs = columns.get(self.reference_column) if self.reference_column else None
        items = [
            {
                "prompt": prompt,
                "response": _text(completion),
                "reference": None if refs is None or refs[i] is None else str(refs[i]),
            }
            for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True))
        ]
        token = os.environ.get(self.api_key_env) if self.api_key_env else None
        body = await post_items(
            self._client(), self.url, items, token=token, max_retries=self.max_retries
        )
        return [None if s is None else float(s) for s in body["scores"]]
