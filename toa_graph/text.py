"""Chat text plumbing used everywhere: message content -> text, prompt -> messages.

A prompt is a plain user string or a list of ``{"role", "content"}`` messages whose
content is a string or OpenAI content parts (``[{"type": "text", "text": ...}, ...]``).
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, ChatMessage, convert_to_messages

__all__ = [
    "content_text",
    "ends_with_user_turn",
    "message_text",
    "messages_prompt",
    "prompt_messages",
]


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


_ROLES = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant",
          "system": "system", "developer": "system"}  # fmt: skip
"""LangChain message types and OpenAI roles -> the prompt's roles."""


def messages_prompt(messages: Any) -> list[dict[str, Any]]:
    """A ``messages`` conversation (LangChain messages, ``{"role", "content"}`` dicts or
    ``(role, text)`` pairs, as in ``MessagesState``) as a prompt: a new list of
    ``{"role", "content"}`` messages.

    Tool calls and tool results have no place in a prompt the agents answer: they are an
    error naming the message (filter them out before the method's node).

    >>> messages_prompt([("system", "Be brief."), {"role": "user", "content": "Hi"}])
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}]
    """
    if not messages:
        raise ValueError("the input needs a 'prompt' or a non-empty 'messages' list")
    # a channel's first value is stored as given: dicts, (role, text) pairs, strings
    as_given = messages if isinstance(messages, list) else [messages]
    prompt = []
    for i, m in enumerate(convert_to_messages(as_given)):
        kind = m.role if isinstance(m, ChatMessage) else m.type
        role = _ROLES.get(kind)
        if role is None or (isinstance(m, AIMessage) and m.tool_calls):
            what = f"a {kind!r} message" if role is None else "a tool call"
            raise ValueError(
                f"messages[{i}] is {what}: a method answers system, user and assistant turns "
                "(leave tool turns out of the messages it is given)"
            )
        prompt.append({"role": role, "content": m.content})
    if prompt[-1]["role"] != "user":
        raise ValueError(
            f"the last of the messages must be a user turn to answer, got {prompt[-1]['role']!r}"
        )
    return prompt


def ends_with_user_turn(messages: Any) -> bool:
    """Whether a ``messages`` conversation ends with a user turn (one waiting for an answer).

    >>> ends_with_user_turn([("user", "Hi"), ("assistant", "Hello")])
    False
    """
    if not messages:
        return False
    last = messages[-1] if isinstance(messages, list) else messages
    (message,) = convert_to_messages([last])
    return _ROLES.get(message.role if isinstance(message, ChatMessage) else message.type) == "user"
