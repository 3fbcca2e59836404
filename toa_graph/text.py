"""Chat text plumbing used everywhere: message content -> text, prompt -> messages.

A prompt is a plain user string or a list of ``{"role", "content"}`` messages whose
content is a string or OpenAI content parts (``[{"type": "text", "text": ...}, ...]``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["content_text", "message_text", "prompt_messages"]


def content_text(content: Any) -> str:
    """The text of a message's content: a string as is; content parts' texts joined
    (strings and ``{"text": ...}`` parts; images and other parts carry no text).

    >>> content_text([{"type": "text", "text": "a"}, {"type": "image_url"}, "b"])
    'ab'
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p if isinstance(p, str) else str(p.get("text", "") or "")
            for p in content
            if isinstance(p, str | dict)
        )
    return str(content)


def message_text(message: Any) -> str:
    """The text of a LangChain message (or generation, or ``{"content": ...}`` dict)."""
    if isinstance(message, dict):
        return content_text(message.get("content"))
    content = getattr(message, "content", None)
    if content is None:
        content = getattr(message, "text", "")
    return content_text(content)


def prompt_messages(prompt: Any, *, text_only: bool = False) -> list[dict[str, Any]]:
    """A prompt as a new list of chat messages (a plain string becomes one user turn).

    ``text_only`` flattens each message to ``{"role", "content": str}`` (exports)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        if text_only:
            return [
                {"role": str(m["role"]), "content": content_text(m.get("content"))} for m in prompt
            ]
        return [dict(m) for m in prompt]
    raise ValueError(f"a prompt must be a string or chat messages, got {type(prompt).__name__}")
