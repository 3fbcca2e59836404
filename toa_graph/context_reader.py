"""How a method graph reads its knobs from the run's context: :class:`ContextReader`.

No LangGraph here: the reader is given a node's ``runtime`` (anything with a ``context``
attribute) and returns the method's own context object (:mod:`toa_graph.context`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from toa_graph.context import BaseContext, SamplingContext, graph_context_class, read_context

__all__ = ["ContextReader"]


class ContextReader:
    """How a method graph reads its knobs from the run's context, whatever that is.

    ``METHODS[name](..., defaults={...})`` makes one per graph: ``defaults`` are checked
    against the method's knobs (a :class:`~toa_graph.errors.UserError` listing them) and
    become the field defaults of the graph's context schema (:attr:`schema`), so a dict
    passed to ``ainvoke(context=...)`` is coerced by LangGraph once per run with them.
    Called from a node, the reader returns that object as is; any other context (none,
    the parent app's dataclass, pydantic model or dict, one of our context classes) is
    read for the knobs it has and sets, the rest from the factory's defaults
    (:func:`~toa_graph.context.read_context`).
    """

    def __init__(
        self,
        method: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        agents: Sequence[str] | None = None,
    ):
        self.method = method
        self.defaults = dict(defaults or {})
        self.agents = list(agents) if agents is not None else None
        self.check: Any = None
        """The method's input pre-check (its registry entry's), run by the graph's first
        node when the factory passes its ``agents``."""
        base: type[BaseContext] | None = None
        if method is not None:
            from toa_graph.registry import get_method, method_context

            spec = get_method(method)
            base = spec.context
            if spec.check_input_path and self.agents is not None:
                self.check = spec.check_input
            if self.defaults:
                method_context(method, self.defaults)  # unknown or bad knobs: UserError
        elif self.defaults:
            raise ValueError("factory defaults need the method's name to be checked")
        name = f"{''.join(p.title() for p in (method or '').split('_'))}GraphContext"
        self.schema = graph_context_class(self.defaults, name, base)
        self._complete = base or SamplingContext  # an instance of it lacks no knob
        self._empty = self.schema()

    def __call__(self, runtime: Any) -> Any:
        ctx = getattr(runtime, "context", None)
        if type(ctx) is self.schema:  # this graph's own schema: coerced by LangGraph
            return ctx
        if ctx is None:
            return self._empty
        if not self.defaults and isinstance(ctx, self._complete):  # nothing to fill
            return ctx
        return read_context(ctx, self.schema)
