"""A chatbot whose every reply is a TOA search over several chat models.

Run it: ``python docs/examples/chatbot.py`` (the embedded stack: tiny CPU models)."""

import asyncio
from dataclasses import dataclass
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph

from toa_graph import METHODS


@dataclass
class ChatContext:
    """The app's own context: TOA reads the knobs it has (``budget``), ignores the rest."""

    user_id: str
    budget: int | None = None  # None: the factory's default below


def build_chatbot(agents: Any, reward: Any) -> Any:
    """``agents``: name -> LangChain chat model, or a config's agents; ``reward``: a reward
    model, a (prompt, responses) -> scores callable, or a config's reward section."""
    toa = METHODS["toa"](agents=agents, reward=reward, defaults={"budget": 8})
    app = StateGraph(MessagesState, context_schema=ChatContext)
    app.add_node("reply", toa.compile())  # reads `messages`, appends the best answer
    app.add_edge(START, "reply")
    return app.compile(checkpointer=InMemorySaver())


async def chat(bot: Any, thread_id: str, text: str, context: ChatContext) -> str:
    config = {"configurable": {"thread_id": thread_id}}
    out = await bot.ainvoke({"messages": [("user", text)]}, config, context=context)
    return out["messages"][-1].content


async def main() -> None:
    """Two turns with the embedded agents and reward (your own: ``load_config(path)``)."""
    from toa_graph.embedded import EmbeddedStack

    with EmbeddedStack() as stack:  # starts the tiny CPU models, stops them at the end
        cfg = stack.config()
        bot = build_chatbot(cfg.agents, cfg.reward)  # a config's reward section works too
        for text in ("What is 2+2?", "And 3+3?"):
            print("you>", text)
            print("bot>", await chat(bot, "thread-1", text, ChatContext(user_id="u1", budget=4)))


if __name__ == "__main__":
    asyncio.run(main())
