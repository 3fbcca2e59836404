"""``toa-graph serve-reward``: one process loads a reward model once and scores for many
clients through one dynamic batcher.

- :mod:`~toa_graph.reward_server.protocol`: request/response bodies of both APIs;
- :mod:`~toa_graph.reward_server.batcher`: the batcher every request feeds;
- :mod:`~toa_graph.reward_server.template`: OpenRLHF queries back into conversations;
- :mod:`~toa_graph.reward_server.serving`: the work (no HTTP);
- :mod:`~toa_graph.reward_server.app`: the FastAPI routes;
- :mod:`toa_graph.rewards.remote`: the ``remote`` reward kind (a client of the server);
- :mod:`~toa_graph.reward_server.trl` and ``verl_reward.py``: trainer adapters.

See ``docs/reward-server.md``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["verl_reward_path"]


def verl_reward_path() -> Path:
    """The standalone verl reward file (``custom_reward_function.path``)."""
    return Path(__file__).resolve().parent / "verl_reward.py"
