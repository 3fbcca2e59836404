"""What describes a sampling method completely: :class:`MethodSpec` and its options model.

A leaf module (no LangGraph, no clients): the registry (:mod:`toa_graph.registry`) keeps
the table of specs, the built-in ones are declared in :mod:`toa_graph.builtin_methods`,
and a plugin module declares its own and hands it to
:func:`toa_graph.registry.register_method`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from toa_graph.context import BaseContext
from toa_graph.errors import UserError

__all__ = ["InputCheck", "InputRejected", "MethodOptions", "MethodSpec", "import_path"]


class MethodOptions(BaseModel):
    """Factory options of a method (none by default); unknown options are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def agent_fields(cls) -> set[str]:
        """Options whose value names an agent (checked against the config's agents)."""
        return {
            name
            for name, f in cls.model_fields.items()
            if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("agent")
        }


class InputRejected(UserError):
    """A run a method cannot start (its input pre-check said why); ``param`` names the
    request field to fix (the server's 400 says it)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


InputCheck = Callable[[Mapping[str, Any], Any, Sequence[str]], None]
"""``check(run_input, context, agent_names)``: raise :class:`InputRejected` when the method
cannot run ``run_input`` (``prompt``, ``reference``) with ``context`` (the method's own
context object) and these agents."""


def import_path(path: str) -> Any:
    """The object a ``module:attribute`` path names (imported now)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """One sampling method: how to build it, its knobs and options, what it exports, how
    Studio shows it and where it comes from. The one thing a new method declares."""

    name: str
    factory_path: str
    """``module:function`` of the ``create_<method>_graph`` factory (imported lazily)."""
    context: type[BaseContext] = BaseContext
    """The method's own knobs (a dataclass deriving :class:`BaseContext`); knob names of
    different methods are independent."""
    options: type[MethodOptions] = MethodOptions
    description: str
    reference: str
    """The implementation the method follows (paper, repository, file)."""
    citation: str | None = None
    """BibTeX of the method's paper (dataset cards cite it); ``None``: the TOA paper."""
    export_kinds: tuple[str, ...] = ("sft", "dpo")
    """The ``toa-graph export`` kinds that fit this method's records (suggested after a run)."""
    check_input_path: str | None = None
    """``module:function`` of an :data:`InputCheck` run before a run starts, by the server
    (a 400) and by the graph itself (an error), or ``None``."""
    studio: bool = True
    """Served to LangGraph Studio (a generated ``graphs/<studio_module>.py`` entry)."""
    studio_module: str = ""
    """Stem of the ``graphs/<stem>.py`` module (default: the method's name)."""

    def __post_init__(self) -> None:
        if not self.studio_module:
            object.__setattr__(self, "studio_module", self.name)
        if not (isinstance(self.context, type) and issubclass(self.context, BaseContext)):
            raise TypeError(f"method {self.name!r}: context must be a BaseContext dataclass")

    @property
    def factory(self) -> Callable[..., Any]:
        factory: Callable[..., Any] = import_path(self.factory_path)
        return factory

    @property
    def knobs(self) -> dict[str, Any]:
        """Knob name -> default, in declaration order."""
        return {f.name: f.default for f in dataclasses.fields(self.context)}

    def check_input(
        self, run_input: Mapping[str, Any], context: Any, agents: Sequence[str]
    ) -> None:
        """Run the method's input pre-check (nothing when it has none)."""
        if self.check_input_path:
            check: InputCheck = import_path(self.check_input_path)
            check(run_input, context, agents)
