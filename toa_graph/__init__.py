"""toa_graph: multi-agent sampling on LangGraph (TOA, MoA, debate and baselines)."""

from toa_graph.agents import AgentPool
from toa_graph.config import AgentConfig, ProjectConfig, load_config
from toa_graph.context import SamplingContext
from toa_graph.methods import METHODS, create_toa_graph
from toa_graph.rewards.base import CallableReward, RewardError, RewardModel, as_reward_model
from toa_graph.state import Sample, SamplingInput, SamplingOutput, SamplingState, best_sample

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AgentConfig",
    "AgentPool",
    "CallableReward",
    "ProjectConfig",
    "RewardError",
    "RewardModel",
    "Sample",
    "SamplingContext",
    "SamplingInput",
    "SamplingOutput",
    "SamplingState",
    "__version__",
    "as_reward_model",
    "best_sample",
    "create_toa_graph",
    "load_config",
]
