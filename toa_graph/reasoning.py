"""Reasoning models: a generation split into its final answer and its thinking trace, and
the per-provider request fields that switch thinking on, off or cap it.

Pure functions over plain data (messages, dicts, strings): no client, no I/O.

The shapes a trace arrives in (:func:`split_message` reads every one):

* ``<think>...</think>`` or ``<thinking>...</thinking>`` in the content (a model served
  without a reasoning parser), also with the opening tag missing (R1 distills: the chat
  template already put ``<think>`` in the prompt, so the reply starts inside it);
* a field beside ``content``: ``reasoning_content`` (vLLM with a parser until late 2025,
  DeepSeek's API, SGLang), ``reasoning`` (vLLM since), ``reasoning_details`` (OpenRouter:
  a list of ``reasoning.text`` / ``reasoning.summary`` entries);
* content blocks of type ``thinking`` (Anthropic, Gemini through LangChain) or
  ``reasoning`` (LangChain's standard blocks, OpenAI's Responses API summaries).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REASONING_FIELDS",
    "REASONING_SETTINGS",
    "Split",
    "estimate_tokens",
    "reasoning_clash",
    "reasoning_request",
    "split_message",
    "split_text",
    "with_reasoning",
]

REASONING_FIELDS = ("reasoning_content", "reasoning", "reasoning_details")
"""Message fields beside ``content`` that carry a trace, in the order they are read."""

_OPEN = re.compile(r"<(think|thinking)>", re.IGNORECASE)
_CLOSE = re.compile(r"</(think|thinking)>", re.IGNORECASE)
_TRACE_BLOCKS = {"thinking", "reasoning", "reasoning_content"}


@dataclass(frozen=True)
class Split:
    """A generation split in two: ``answer`` (what is scored and shown) and ``reasoning``
    (the trace; ``None`` when the model gave none). ``unfinished``: the generation stopped
    inside its thinking (an opening tag never closed, or a trace with no answer)."""

    answer: str
    reasoning: str | None = None
    unfinished: bool = False


def split_text(text: str) -> Split:
    """Take ``<think>`` / ``<thinking>`` blocks out of a completion's text.

    >>> split_text("<think>2+2 is 4</think>\\n\\nThe answer is 4.")
    Split(answer='The answer is 4.', reasoning='2+2 is 4', unfinished=False)
    >>> split_text("the template opened it</think>4")  # opening tag in the prompt
    Split(answer='4', reasoning='the template opened it', unfinished=False)
    >>> split_text("<think>still thinking when the tokens ran out")
    Split(answer='', reasoning='still thinking when the tokens ran out', unfinished=True)
    >>> split_text("no thinking at all")
    Split(answer='no thinking at all', reasoning=None, unfinished=False)
    """
    if "<" not in text:  # the common case, and the cheap one
        return Split(text)
    traces: list[str] = []
    answer: list[str] = []
    rest = text
    first_close = _CLOSE.search(rest)
    first_open = _OPEN.search(rest)
    if first_close and (first_open is None or first_close.start() < first_open.start()):
        traces.append(rest[: first_close.start()])  # the reply began inside its thinking
        rest = rest[first_close.end() :]
    unfinished = False
    while (opened := _OPEN.search(rest)) is not None:
        answer.append(rest[: opened.start()])
        closed = _CLOSE.search(rest, opened.end())
        if closed is None:
            traces.append(rest[opened.end() :])
            rest, unfinished = "", True
            break
        traces.append(rest[opened.end() : closed.start()])
        rest = rest[closed.end() :]
    answer.append(rest)
    if not traces:
        return Split(text)
    trace = "\n\n".join(t.strip() for t in traces if t.strip())
    return Split("".join(answer).strip(), trace or None, unfinished)


def _details_text(details: Any) -> str:
    """OpenRouter's ``reasoning_details``: the text of its ``reasoning.text`` entries
    (``reasoning.summary`` where there is no text; encrypted entries carry none)."""
    if isinstance(details, str):
        return details
    if not isinstance(details, list):
        return ""
    texts = [str(d.get("text") or "") for d in details if isinstance(d, Mapping)]
    if not any(texts):
        texts = [str(d.get("summary") or "") for d in details if isinstance(d, Mapping)]
    return "\n\n".join(t for t in texts if t)


def _field_trace(fields: Mapping[str, Any]) -> str:
    for name in REASONING_FIELDS:
        value = fields.get(name)
        if name == "reasoning_details":
            value = _details_text(value)
        elif isinstance(value, Mapping):  # ``reasoning: {"summary": ...}`` objects
            value = _block_trace(dict(value, type="reasoning"))
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _block_trace(block: Mapping[str, Any]) -> str:
    """The trace of one ``thinking`` / ``reasoning`` content block, whichever key holds it
    (Anthropic ``thinking``, LangChain ``reasoning``, Responses API ``summary`` parts)."""
    for key in ("thinking", "reasoning", "reasoning_content", "text"):
        value = block.get(key)
        if isinstance(value, str) and value:
            return value
    summary = block.get("summary")
    if isinstance(summary, list):
        return "\n\n".join(
            str(p.get("text") or "") if isinstance(p, Mapping) else str(p) for p in summary
        ).strip()
    return ""


def _content_parts(content: Any) -> tuple[str, str]:
    """(answer text, trace text) of a message's content: a string, or content blocks."""
    if content is None:
        return "", ""
    if isinstance(content, str):
        return content, ""
    if not isinstance(content, list):
        return str(content), ""
    answer: list[str] = []
    traces: list[str] = []
    for part in content:
        if isinstance(part, str):
            answer.append(part)
        elif isinstance(part, Mapping):
            if part.get("type") in _TRACE_BLOCKS:
                traces.append(_block_trace(part))
            elif part.get("type") in (None, "text", "output_text"):
                answer.append(str(part.get("text") or ""))
    return "".join(answer), "\n\n".join(t for t in traces if t)


def split_message(message: Any) -> Split:
    """Answer and trace of a chat message in any shape above: a LangChain message (its
    ``content`` and ``additional_kwargs``), an OpenAI SDK message, or a plain dict.

    >>> split_message({"content": "4", "reasoning_content": "2+2"})
    Split(answer='4', reasoning='2+2', unfinished=False)
    >>> split_message({"content": [{"type": "thinking", "thinking": "2+2"},
    ...                            {"type": "text", "text": "4"}]})
    Split(answer='4', reasoning='2+2', unfinished=False)
    """
    if isinstance(message, Mapping):
        content, fields = message.get("content"), message
    else:
        content = getattr(message, "content", None)
        if content is None and not hasattr(message, "additional_kwargs"):
            content = getattr(message, "text", None)  # a bare generation
        fields = dict(getattr(message, "additional_kwargs", None) or {})
        extra = getattr(message, "model_extra", None)  # an OpenAI SDK message's extras
        fields.update(extra or {})
        for name in REASONING_FIELDS:
            if name not in fields and isinstance(getattr(message, name, None), str | list):
                fields[name] = getattr(message, name)
    answer, block_trace = _content_parts(content)
    inline = split_text(answer)
    traces = [t for t in (_field_trace(fields), block_trace, inline.reasoning or "") if t.strip()]
    reasoning = "\n\n".join(t.strip() for t in traces) or None
    unfinished = inline.unfinished or (reasoning is not None and not inline.answer.strip())
    return Split(inline.answer, reasoning, unfinished)


def estimate_tokens(trace: str) -> int:
    """About how many tokens ``trace`` took: 4 characters a token, rounded up (where the provider sends
    no count; the usage is then marked ``estimated``).

    >>> estimate_tokens("x" * 10)
    3
    """
    return (len(trace) + 3) // 4


def with_reasoning(answer: str, reasoning: str | None) -> str:
    """The answer with its trace in front as a ``<think>`` block (what a prompt or a reward
    sees with ``show_reasoning`` / ``score_reasoning`` on, and the ``tags`` export format).

    >>> with_reasoning("4", "2+2")
    '<think>\\n2+2\\n</think>\\n\\n4'
    """
    return f"<think>\n{reasoning}\n</think>\n\n{answer}" if reasoning else answer


# ---------------------------------------------------------------- request settings


def _openai_fields(effort: str | None, budget: int | None, enable: bool | None) -> dict:
    out: dict[str, Any] = {}
    if effort is not None:
        out["reasoning_effort"] = effort  # a ChatOpenAI field: top-level in the request
    if enable is not None:
        out["extra_body.chat_template_kwargs.enable_thinking"] = enable  # vLLM / SGLang
    if budget is not None:
        out["extra_body.thinking_token_budget"] = budget  # vLLM
    return out


def _anthropic_fields(effort: str | None, budget: int | None, enable: bool | None) -> dict:
    if effort is not None:
        raise ValueError("provider anthropic: set thinking_budget, not reasoning_effort")
    if enable is False:
        if budget is not None:
            raise ValueError("enable_thinking is false but thinking_budget is set")
        return {"thinking": {"type": "disabled"}}
    if budget is None:
        if enable:
            raise ValueError("provider anthropic: enable_thinking needs a thinking_budget")
        return {}
    return {"thinking": {"type": "enabled", "budget_tokens": budget}}


def _google_fields(effort: str | None, budget: int | None, enable: bool | None) -> dict:
    out: dict[str, Any] = {}
    if effort is not None:
        out["thinking_level"] = effort
    if enable is False:
        if budget:
            raise ValueError("enable_thinking is false but thinking_budget is set")
        out["thinking_budget"] = 0
    elif budget is not None:
        out["thinking_budget"] = budget
    if enable or budget:
        out["include_thoughts"] = True  # else Gemini thinks but sends no trace
    return out


def _ollama_fields(effort: str | None, budget: int | None, enable: bool | None) -> dict:
    if budget is not None:
        raise ValueError("provider ollama has no thinking budget; leave thinking_budget unset")
    if effort is not None and enable is False:
        raise ValueError("enable_thinking is false but reasoning_effort is set")
    value = effort if effort is not None else enable
    return {} if value is None else {"reasoning": value}


def _generic_fields(effort: str | None, budget: int | None, enable: bool | None) -> dict:
    if budget is not None or enable is not None:
        raise ValueError(
            "thinking_budget / enable_thinking are not translated for this provider; "
            "pass its own field in client_options"
        )
    return {} if effort is None else {"reasoning_effort": effort}


_TRANSLATE = {
    "openai": _openai_fields,
    "azure_openai": _generic_fields,
    "anthropic": _anthropic_fields,
    "google_genai": _google_fields,
    "google_vertexai": _google_fields,
    "ollama": _ollama_fields,
}


def reasoning_request(
    provider: str,
    *,
    reasoning_effort: str | None = None,
    thinking_budget: int | None = None,
    enable_thinking: bool | None = None,
) -> dict[str, Any]:
    """The request settings that carry an agent's reasoning settings to ``provider``: dotted
    paths (``extra_body.chat_template_kwargs.enable_thinking``) -> value; only what is set.

    For ``openai`` (any OpenAI-compatible endpoint) ``reasoning_effort`` is the request's
    top-level field (OpenAI, gpt-oss on vLLM, OpenRouter), ``enable_thinking`` goes to the
    chat template (vLLM / SGLang ``chat_template_kwargs``) and ``thinking_budget`` is vLLM's
    ``thinking_token_budget``. Other providers: their LangChain chat model's own fields.
    Raises ``ValueError`` for a setting the provider has no way to take.

    >>> reasoning_request("openai", enable_thinking=False)
    {'extra_body.chat_template_kwargs.enable_thinking': False}
    >>> reasoning_request("anthropic", thinking_budget=2048)
    {'thinking': {'type': 'enabled', 'budget_tokens': 2048}}
    """
    if reasoning_effort is None and thinking_budget is None and enable_thinking is None:
        return {}
    translate = _TRANSLATE.get(provider, _generic_fields)
    return translate(reasoning_effort, thinking_budget, enable_thinking)


REASONING_SETTINGS = ("reasoning_effort", "thinking_budget", "enable_thinking")
"""An agent's reasoning settings (config fields, each sent only when set)."""


def settings_of(agent: Any) -> dict[str, Any]:
    """An agent config's reasoning settings (``None`` where unset)."""
    return {k: getattr(agent, k, None) for k in REASONING_SETTINGS}


def reasoning_clash(
    provider: str, settings: Mapping[str, Any], given_name: str, given: Mapping[str, Any]
) -> None:
    """Raise ``ValueError`` naming both places when a reasoning setting fills a request field
    that ``given`` (the agent's ``extra_body`` or ``client_options``) sets too, or when the
    provider cannot take the settings.

    >>> reasoning_clash("openai", {"enable_thinking": True}, "extra_body",
    ...                 {"chat_template_kwargs": {"enable_thinking": False}})
    Traceback (most recent call last):
    ...
    ValueError: enable_thinking and extra_body.chat_template_kwargs.enable_thinking set the same thing; keep one of them
    """
    reasoning_request(provider, **settings)  # the settings together (a clash raises)
    for option, value in settings.items():
        if value is None:
            continue
        for path in reasoning_request(provider, **{option: value}):
            key = path.removeprefix("extra_body.")
            if has_path(given, key):
                raise ValueError(
                    f"{option} and {given_name}.{key} set the same thing; keep one of them"
                )


def set_path(target: dict[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, making the dicts on the way (copies, never the caller's)."""
    *parents, leaf = path.split(".")
    node = target
    for key in parents:
        child = node.get(key)
        node[key] = dict(child) if isinstance(child, Mapping) else {}
        node = node[key]
    node[leaf] = value


def has_path(source: Mapping[str, Any], path: str) -> bool:
    node: Any = source
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True
