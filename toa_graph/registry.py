"""The method registry: every sampling method declared once, here.

Each :class:`MethodSpec` names a method's factory (imported lazily, so reading the table
loads neither LangGraph nor any client), its context dataclass (the per-run knobs), its
options model (factory arguments such as MoA's ``aggregator``), a one-line description
and the reference it follows. ``METHODS``, the config's ``method:`` section, the CLI's
``--set`` help, the server, synthesis, compare, chat and Studio (``graphs/``,
``langgraph.json``) all read this table; :func:`compile_method` compiles a method graph
for every caller.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from toa_graph.context import BaseContext, DebateContext, MoaContext, ToaContext
from toa_graph.errors import UserError

__all__ = [
    "METHOD_SPECS",
    "DebateOptions",
    "MethodOptions",
    "MethodSpec",
    "MoaOptions",
    "compile_method",
    "get_method",
    "knobs_help",
    "method_context",
    "method_names",
    "method_options",
]


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


class MoaOptions(MethodOptions):
    aggregator: str | None = Field(
        default=None,
        description="Agent writing one final answer from the last layer (costs one generation).",
        json_schema_extra={"agent": True},
    )


class DebateOptions(MethodOptions):
    """Debate has no factory options (every agent debates; D&R's student is whichever agent
    the exported data trains)."""


@dataclass(frozen=True, kw_only=True)
class MethodSpec:
    """One sampling method: how to build it, its knobs, its options, where it comes from."""

    name: str
    factory_path: str
    """``module:function`` of the ``create_<method>_graph`` factory."""
    context: type[BaseContext]
    options: type[MethodOptions]
    description: str
    reference: str
    studio_module: str
    """Stem of the ``graphs/<stem>.py`` module that serves it to LangGraph Studio."""

    @property
    def factory(self) -> Callable[..., Any]:
        module, _, attr = self.factory_path.partition(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module), attr)
        return factory

    @property
    def knobs(self) -> dict[str, Any]:
        """Knob name -> default, in declaration order."""
        return {f.name: f.default for f in dataclasses.fields(self.context)}


METHOD_SPECS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="random",
            factory_path="toa_graph.methods.random_sampling:create_random_sampling_graph",
            context=BaseContext,
            options=MethodOptions,
            description="Best of N samples from one agent.",
            reference="TOA paper baseline (oceanypt/TOA code/ensemble_methods.py)",
            studio_module="random_sampling",
        ),
        MethodSpec(
            name="prs",
            factory_path="toa_graph.methods.prs:create_prs_graph",
            context=BaseContext,
            options=MethodOptions,
            description="Preference-guided reflective sampling: sample, pick the best, refine it.",
            reference="TOA paper baseline PRS (oceanypt/TOA code/ensemble_methods.py)",
            studio_module="prs",
        ),
        MethodSpec(
            name="ensemble",
            factory_path="toa_graph.methods.ensemble:create_ensemble_graph",
            context=BaseContext,
            options=MethodOptions,
            description="Every agent samples its share of the budget in parallel.",
            reference="TOA paper baseline (oceanypt/TOA code/ensemble_methods.py)",
            studio_module="ensemble",
        ),
        MethodSpec(
            name="seq_refine",
            factory_path="toa_graph.methods.seq_refine:create_seq_refine_graph",
            context=BaseContext,
            options=MethodOptions,
            description="Independent chains, each reshuffling the agents: a fresh answer, then each "
            "agent refines the previous step's answer.",
            reference="TOA paper baseline Seq_thread (oceanypt/TOA code/ensemble_methods.py)",
            studio_module="seq_refine",
        ),
        MethodSpec(
            name="moa",
            factory_path="toa_graph.methods.moa:create_moa_graph",
            context=MoaContext,
            options=MoaOptions,
            description="Mixture-of-Agents: stacks of layers, each agent reading the previous layer's "
            "answers of its stack; optional final aggregator.",
            reference="TOA paper baseline MoA_thread; Together MoA arXiv 2406.04692 "
            "(togethercomputer/MoA)",
            studio_module="moa",
        ),
        MethodSpec(
            name="debate",
            factory_path="toa_graph.methods.debate:create_debate_graph",
            context=DebateContext,
            options=DebateOptions,
            description="Debate & Reflect: agents debate; correct ones give feedback, others reflect.",
            reference="D&R (zhouxiaofengshelf/D-R debate_teachers_student_w_critique.py)",
            studio_module="debate",
        ),
        MethodSpec(
            name="toa",
            factory_path="toa_graph.methods.toa:create_toa_graph",
            context=ToaContext,
            options=MethodOptions,
            description="Tree search over agents and responses steered by a reward model.",
            reference="TOA, arXiv 2412.17061 (oceanypt/TOA code/ensemble_methods.py)",
            studio_module="toa",
        ),
    )
}
"""Method name -> spec; the order is the order methods are listed in."""


def method_names() -> list[str]:
    return list(METHOD_SPECS)


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``; :class:`~toa_graph.errors.UserError` (a ``ValueError``) listing
    the methods when there is none."""
    try:
        return METHOD_SPECS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; methods: {', '.join(METHOD_SPECS)}") from None


def _format_knobs(spec: MethodSpec) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in spec.knobs.items())


def method_context(name: str, knobs: Mapping[str, Any] | None = None) -> BaseContext:
    """Validate ``knobs`` for method ``name`` into its context; unknown knobs are an error
    naming the method and listing its knobs."""
    spec = get_method(name)
    knobs = dict(knobs or {})
    unknown = sorted(set(knobs) - set(spec.knobs))
    if unknown:
        raise UserError(
            f"method {name!r} has no knob(s) {unknown}; its knobs: {_format_knobs(spec)}"
        )
    try:
        return spec.context(**knobs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"method {name!r}: {exc}") from None


def method_options(name: str, options: Mapping[str, Any] | None = None) -> MethodOptions:
    """Validate ``options`` for method ``name``; unknown options are an error naming them."""
    spec = get_method(name)
    try:
        return spec.options.model_validate(dict(options or {}))
    except ValidationError as exc:
        allowed = ", ".join(spec.options.model_fields) or "none"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise UserError(
            f"method {name!r}: invalid options ({problems}); its options: {allowed}"
        ) from None


def build_method(
    name: str,
    *,
    agents: Any,
    reward: Any,
    options: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Any:
    """The uncompiled graph of method ``name`` with ``options`` passed to its factory, and
    ``defaults`` for the knobs a run's context does not set (checked against its knobs)."""
    spec = get_method(name)
    opts = method_options(name, options)
    return spec.factory(
        agents=agents, reward=reward, defaults=defaults, **opts.model_dump(exclude_defaults=True)
    )


def compile_method(
    name: str,
    *,
    agents: Any,
    reward: Any,
    options: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
    **compile_kw: Any,
) -> Any:
    """The one way every caller compiles a method graph (``name`` defaults to the method);
    ``defaults``: knobs for runs whose context does not set them."""
    builder = build_method(name, agents=agents, reward=reward, options=options, defaults=defaults)
    compile_kw.setdefault("name", name)
    return builder.compile(**compile_kw)


def knobs_help() -> str:
    """The shared knobs, then each method's own knobs and options, with their defaults
    (for ``--set`` help texts)."""
    shared = {f.name: f.default for f in dataclasses.fields(BaseContext)}
    lines = ["every method: " + ", ".join(f"{k}={v!r}" for k, v in shared.items())]
    for spec in METHOD_SPECS.values():
        own = [f"{k}={v!r}" for k, v in spec.knobs.items() if k not in shared]
        if spec.options.model_fields:
            own.append("config options: " + ", ".join(spec.options.model_fields))
        if own:
            lines.append(f"{spec.name}: " + ", ".join(own))
    return "\n".join(lines)
