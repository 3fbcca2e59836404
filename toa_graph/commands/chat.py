"""``toa-graph chat``: a multi-turn REPL whose every answer is the best of a search."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toa_graph.errors import UserError

if TYPE_CHECKING:
    from toa_graph.progress import Progress
    from toa_graph.rewards.base import RewardModel

DESCRIPTION = """\
Chat with a team of models: each of your messages (with the conversation so far) is
answered by a sampling method (TOA by default); you see the search's progress live and
get the best-rewarded answer, with the agent that wrote it.

Commands inside the chat:
  /method [NAME]      show or switch the method (toa, moa, ensemble, ...)
  /budget [N]         show or set the generations per answer
  /agents [A,B|all]   list the agents, or use only some of them
  /set KNOB=VALUE     another context knob (alpha, tau, rounds, ...)
  /reset              forget the conversation
  /help, /quit        (Ctrl-D also quits; Ctrl-C stops a running search)

Without --config the embedded default is started (and stopped when you quit). Your
lines are kept in a readline history (arrow keys; $TOA_GRAPH_HISTORY, default
~/.toa_graph_history). Example:

  toa-graph chat --config model_configs/synthesis-4x8b.yaml --method moa --budget 6
  you> /set rounds=2
  you> Explain the birthday paradox in two sentences.
"""

HISTORY_LENGTH = 1000

HELP = DESCRIPTION.split("Commands inside the chat:\n", 1)[1].split("\n\n", 1)[0]


def add_parser(sub: Any) -> None:
    from toa_graph.commands import budget_help_text, settings_parser

    p = sub.add_parser(
        "chat",
        help="interactive multi-turn chat; each answer is the best of a search",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[
            settings_parser(
                budget_help=budget_help_text("answer"),
                set_what="a context knob (repeatable)",
                keep_help="leave embedded servers running at exit",
            )
        ],
    )
    p.add_argument("--agents", default=None, help="comma-separated agent names (default: all)")
    p.set_defaults(func=chat)


@dataclass
class ChatSession:
    """The REPL's state: settings, conversation and cached compiled graphs."""

    all_agents: dict[str, Any]
    """Name -> AgentConfig or LangChain chat model, in the config's order."""
    reward: RewardModel
    method: str
    knobs: dict[str, Any]
    agents: list[str]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Method -> factory options (the config's ``method.options`` for its method)."""
    history: list[dict[str, str]] = field(default_factory=list)
    _graphs: dict[tuple[str, tuple[str, ...]], Any] = field(default_factory=dict)

    def graph(self) -> Any:
        from toa_graph.registry import compile_method

        key = (self.method, tuple(self.agents))
        if key not in self._graphs:
            chosen = {n: a for n, a in self.all_agents.items() if n in self.agents}
            self._graphs[key] = compile_method(
                self.method, agents=chosen, reward=self.reward,
                options=self.options.get(self.method),
            )  # fmt: skip
        return self._graphs[key]

    def context(self, knobs: dict[str, Any] | None = None) -> Any:
        """The current method's context from the session's knobs (those it has), or from
        ``knobs``; an agent left out of ``/agents`` falls back to the default."""
        from toa_graph.registry import RunSettings

        mine = RunSettings.own_knobs(self.method, self.knobs if knobs is None else knobs)
        if mine.get("agent") not in (None, *self.agents):
            mine.pop("agent")
        return RunSettings.resolve(method=self.method, knobs=mine).context

    # ------------------------------------------------------------------ commands

    def command(self, line: str) -> bool:
        """Handle a ``/command``; False to quit."""
        from toa_graph.commands import parse_knobs
        from toa_graph.registry import METHOD_SPECS, knobs_help, method_names

        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if name in ("quit", "exit", "q"):
            return False
        if name == "help":
            print(HELP)
        elif name == "method":
            if arg and arg not in method_names():
                print(f"unknown method {arg!r}; methods: {', '.join(method_names())}")
            elif arg:
                self.method = arg
            print(f"method: {self.method}")
        elif name == "budget":
            if arg:
                try:
                    budget = int(arg)
                    if budget < 1:
                        raise ValueError
                    self.knobs["budget"] = budget
                except ValueError:
                    print(f"/budget expects a positive integer, got {arg!r}")
            print(f"budget: {self.context().budget}")
        elif name == "agents":
            names = list(self.all_agents)
            if arg:
                wanted = names if arg == "all" else [s.strip() for s in arg.split(",") if s.strip()]
                unknown = [w for w in wanted if w not in names]
                if unknown or not wanted:
                    print(f"unknown agent(s) {unknown}; agents: {', '.join(names)}")
                else:
                    self.agents = [n for n in names if n in wanted]
            for n, a in self.all_agents.items():
                mark = "*" if n in self.agents else " "
                where = f"{a.model}  {a.urls[0]}" if hasattr(a, "urls") else type(a).__name__
                print(f" {mark} {n:<20} {where}")
        elif name == "set":
            try:
                update = parse_knobs([arg])
                stray = [k for k in update if not any(k in m.knobs for m in METHOD_SPECS.values())]
                if stray:
                    knobs = " | ".join(knobs_help().splitlines())
                    raise UserError(f"no knob(s) {stray} in any method; knobs: {knobs}")
                self.context({**self.knobs, **update})  # a bad value for this method
                self.knobs.update(update)
                print(f"{', '.join(f'{k}={v}' for k, v in update.items())}")
            except (TypeError, ValueError) as exc:  # UserError: a ValueError
                print(f"/set: {exc}")
        elif name == "reset":
            self.history.clear()
            print("conversation cleared")
        else:
            print(f"unknown command /{name}; /help lists them")
        return True

    # ------------------------------------------------------------------ turns

    async def answer(self, text: str, show: Any) -> dict[str, Any]:
        from toa_graph.progress import Progress, astream_run

        ctx = self.context()
        prompt = [*self.history, {"role": "user", "content": text}]
        output: dict[str, Any] = {}
        async for item in astream_run(self.graph(), {"prompt": prompt}, ctx, budget=ctx.budget):
            if isinstance(item, Progress):
                show(item)
            else:
                output = item.output
        return output


class _ProgressLine:
    """One status line, rewritten in place on a terminal, one line per report otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self.shown = False

    def __call__(self, p: Progress) -> None:
        best = (
            f"best {p.best_reward:.3f} ({p.best_agent})"
            if p.best_reward is not None
            else "no scored answer yet"
        )
        total = f"/{p.budget}" if p.budget else ""
        line = f"  searching: {p.generations}{total} generations, {best}"
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            sys.stdout.write("\r" + line[:width].ljust(min(width, len(line) + 8)))
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
        self.shown = True

    def done(self) -> None:
        if self.tty and self.shown:
            sys.stdout.write("\n")
        self.shown = False


def chat(args: argparse.Namespace) -> int:
    from toa_graph.commands import check_budget_flag, project_config, run_settings
    from toa_graph.rewards import build_reward

    check_budget_flag(args.budget)  # a bad flag fails before any server starts
    with project_config(args.config, keep_servers=args.keep_servers) as cfg:
        settings = run_settings(args, cfg)  # bad knobs fail now, not at the first message
        knobs = {**cfg.method.context, **settings.knobs}  # other methods' knobs: for /method
        names = [a.name for a in cfg.agents]
        agents = names
        if args.agents:
            agents = [s.strip() for s in args.agents.split(",") if s.strip()]
            unknown = [a for a in agents if a not in names]
            if unknown:
                raise UserError(f"--agents: unknown {unknown}; agents: {names}")
        session = ChatSession(
            all_agents={a.name: a for a in cfg.agents},
            reward=build_reward(cfg.reward, agents=cfg.agents),
            method=settings.method,
            knobs=knobs,
            agents=[n for n in names if n in agents],
            options={cfg.method.name: dict(cfg.method.options)},
        )
        print(
            f"toa-graph chat: method {session.method}, budget {session.context().budget}, "
            f"agents {', '.join(session.agents)}. /help for commands, /quit to leave.",
            flush=True,
        )
        with asyncio.Runner() as runner, readline_history(history_path()):
            return _loop(session, runner)


def history_path() -> Path:
    """``$TOA_GRAPH_HISTORY``, else ``~/.toa_graph_history``."""
    return Path(os.environ.get("TOA_GRAPH_HISTORY") or Path.home() / ".toa_graph_history")


@contextlib.contextmanager
def readline_history(path: Path) -> Iterator[None]:
    """Line editing and history for ``input()``, loaded from and saved to ``path`` (a
    no-op where the readline module is missing, e.g. on Windows)."""
    try:
        import readline
    except ImportError:
        yield
        return
    with contextlib.suppress(OSError):
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LENGTH)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)


def _loop(session: ChatSession, runner: asyncio.Runner) -> int:
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            continue
        if not line:
            continue
        if line.startswith("/"):
            if not session.command(line):
                return 0
            continue
        progress = _ProgressLine()
        t0 = time.perf_counter()
        try:
            out = runner.run(session.answer(line, progress))
        except KeyboardInterrupt:
            progress.done()
            print("  (search interrupted; message dropped)")
            continue
        except Exception as exc:
            progress.done()
            print(f"  error: {type(exc).__name__}: {exc}")
            continue
        progress.done()
        samples = out.get("samples") or []
        best = out.get("best")
        if not best:
            errors = [s["error"] for s in samples if s.get("error")]
            print(f"  no answer could be scored ({errors[0] if errors else 'no samples'})")
            continue
        seconds = time.perf_counter() - t0
        print(
            f"[{best['agent']} | reward {best['reward']:.3f} | {len(samples)} samples, "
            f"{session.method}, {seconds:.1f} s]"
        )
        print(best["text"].strip(), flush=True)
        session.history.append({"role": "user", "content": line})
        session.history.append({"role": "assistant", "content": best["text"]})
