"""A chatbot whose every reply is a TOA search over several chat models."""

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
    """``agents``: name -> LangChain chat model; ``reward``: (prompt, responses) -> scores."""
    toa = METHODS["toa"](agents=agents, reward=reward, defaults={"budget": 8})
    app = StateGraph(MessagesState, context_schema=ChatContext)
    app.add_node("reply", toa.compile())  # reads `messages`, appends the best answer
    app.add_edge(START, "reply")
    return app.compile(checkpointer=InMemorySaver())


async def chat(bot: Any, thread_id: str, text: str, context: ChatContext) -> str:
    config = {"configurable": {"thread_id": thread_id}}
    out = await bot.ainvoke({"messages": [("user", text)]}, config, context=context)
    return out["messages"][-1].content
