"""Recovering (messages, response) from an OpenRLHF query rendered in the policy's template.

OpenRLHF sends ``query``: the policy's chat-templated prompt followed by the generated
response (and often the end-of-turn / EOS token), and, from newer clients, ``prompts``:
the same templated prompt alone. A reward model must not score that text as it is: it has
its own chat template (an HF reward applies it to ``messages + [assistant response]``) and
the policy's markers would be read as content. So the server turns each query back into a
conversation:

1. the response is ``query[len(prompt):]`` when ``prompts`` are given and the query starts
   with its prompt (else the query is split at the policy template's generation prompt);
2. a trailing end-of-turn marker of the policy template (e.g. ``<|im_end|>\\n``) and any
   of its special tokens are cut off the response;
3. the prompt text is parsed back into messages with the policy's template: it is
   rendered once with placeholder contents, and the text between the placeholders' places
   (the role markers) becomes a pattern that the prompt must match.

Without a policy template (no ``--policy-tokenizer``) the prompt text is passed to the
reward as a plain string prompt and only rule 1 applies.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PolicyTemplate", "split_query"]

_SYS, _USR, _AST = "\x00SYSTEM\x00", "\x00USER\x00", "\x00ASSISTANT\x00"

Render = Callable[[list[dict[str, str]], bool], str]


@dataclass(frozen=True)
class _Layout:
    """The policy template cut at its placeholder contents."""

    head: str
    """Before the first user message (with a system message: before the system text)."""
    system_to_user: str | None
    """Between the system text and the user text (``None``: the template has no system)."""
    user_to_answer: str
    """Between the user text and the response: the generation prompt."""
    end_of_turn: str
    """After an assistant message's content."""


class PolicyTemplate:
    """A policy's chat template, used backwards (see the module doc).

    Built from a ``render(messages, add_generation_prompt)`` function, e.g. a tokenizer's
    ``apply_chat_template(..., tokenize=False)`` (:meth:`from_tokenizer`).
    """

    def __init__(self, render: Render, special_tokens: Sequence[str] = ()) -> None:
        user_only = render([{"role": "user", "content": _USR}], True)
        head, _, answer_prompt = user_only.partition(_USR)
        convo = render(
            [{"role": "user", "content": _USR}, {"role": "assistant", "content": _AST}], False
        )
        end_of_turn = convo.partition(_AST)[2]
        system_to_user: str | None = None
        try:
            with_sys = render(
                [{"role": "system", "content": _SYS}, {"role": "user", "content": _USR}], True
            )
            if _SYS in with_sys:
                sys_head, _, rest = with_sys.partition(_SYS)
                system_to_user = rest.partition(_USR)[0]
                head_sys = sys_head
            else:
                head_sys = head
        except Exception:  # templates that refuse a system message
            head_sys = head
        self.layout = _Layout(head, system_to_user, answer_prompt, end_of_turn)
        self._head_sys = head_sys
        self.special_tokens = tuple(t for t in special_tokens if t)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> PolicyTemplate:
        def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
            return str(
                tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=add_generation_prompt
                )
            )

        return cls(render, list(getattr(tokenizer, "all_special_tokens", []) or []))

    @classmethod
    def load(cls, path: str) -> PolicyTemplate:
        """From a local tokenizer directory (``AutoTokenizer``; nothing is downloaded)."""
        from transformers import AutoTokenizer

        return cls.from_tokenizer(AutoTokenizer.from_pretrained(path, local_files_only=True))

    def messages(self, prompt_text: str) -> list[dict[str, str]] | None:
        """The conversation a templated prompt was rendered from (``None`` if it does not
        fit the template: one optional system message and one user message)."""
        lay = self.layout
        tail = re.escape(lay.user_to_answer) + r"\Z"
        m = re.fullmatch(re.escape(lay.head) + r"(?P<user>.*?)" + tail, prompt_text, re.S)
        if lay.system_to_user is not None:
            pattern = (
                re.escape(self._head_sys) + r"(?P<system>.*?)" + re.escape(lay.system_to_user)
                + r"(?P<user>.*?)" + tail
            )  # fmt: skip
            ms = re.fullmatch(pattern, prompt_text, re.S)
            if ms is not None and (m is None or len(ms.group("user")) < len(m.group("user"))):
                return [
                    {"role": "system", "content": ms.group("system")},
                    {"role": "user", "content": ms.group("user")},
                ]
        if m is None:
            return None
        return [{"role": "user", "content": m.group("user")}]

    def strip_end(self, response: str) -> str:
        """The response without a trailing end-of-turn marker or special tokens."""
        changed = True
        while changed:
            changed = False
            for marker in (self.layout.end_of_turn, self.layout.end_of_turn.strip(),
                           *self.special_tokens):  # fmt: skip
                if marker and response.endswith(marker):
                    response = response[: -len(marker)]
                    changed = True
        return response

    def split(self, query: str) -> tuple[str, str] | None:
        """(prompt text, response) of a query with no separate prompt: cut after the last
        generation prompt; ``None`` when the template's marker is not in the query."""
        marker = self.layout.user_to_answer
        if not marker or marker not in query:
            return None
        cut = query.rindex(marker) + len(marker)
        return query[:cut], query[cut:]


def split_query(
    query: str, prompt: str | None, template: PolicyTemplate | None
) -> tuple[str | list[dict[str, str]], str]:
    """The (prompt, response) a reward model should score for one OpenRLHF query.

    The prompt is a message list when the policy template recovers it, else text.

    >>> split_query("Q: 2+2? A: 4", "Q: 2+2? A:", None)
    ('Q: 2+2? A:', ' 4')
    """
    if prompt is not None and query.startswith(prompt):
        prompt_text, response = prompt, query[len(prompt) :]
    elif template is not None and (parts := template.split(query)) is not None:
        prompt_text, response = parts
    else:
        prompt_text, response = (prompt or ""), query
    if template is None:
        return prompt_text, response
    response = template.strip_end(response)
    messages = template.messages(prompt_text)
    return (messages if messages is not None else prompt_text), response
