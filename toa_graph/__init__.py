"""toa_graph: multi-agent sampling on LangGraph (TOA, AB-MCTS, MoA, debate and baselines)."""

from toa_graph.agents import AgentPool
from toa_graph.config import AgentConfig, ProjectConfig, load_config
from toa_graph.context import SamplingContext
from toa_graph.method_spec import MethodSpec
from toa_graph.methods import (
    METHODS,
    create_abmcts_graph,
    create_debate_graph,
    create_ensemble_graph,
    create_moa_graph,
    create_prs_graph,
    create_random_sampling_graph,
    create_seq_refine_graph,
    create_toa_graph,
    debate_tdpo_pairs,
)
from toa_graph.registry import RunSettings, compile_method, load_plugins, register_method
from toa_graph.rewards.base import CallableReward, RewardError, RewardModel, as_reward_model
from toa_graph.state import Sample, SamplingInput, SamplingOutput, SamplingState, best_sample

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "AgentConfig",
    "AgentPool",
    "CallableReward",
    "MethodSpec",
    "ProjectConfig",
    "RewardError",
    "RewardModel",
    "RunSettings",
    "Sample",
    "SamplingContext",
    "SamplingInput",
    "SamplingOutput",
    "SamplingState",
    "__version__",
    "as_reward_model",
    "best_sample",
    "compile_method",
    "create_abmcts_graph",
    "create_debate_graph",
    "create_ensemble_graph",
    "create_moa_graph",
    "create_prs_graph",
    "create_random_sampling_graph",
    "create_seq_refine_graph",
    "create_toa_graph",
    "debate_tdpo_pairs",
    "load_config",
    "register_method",
]

load_plugins(strict=False)  # methods of $TOA_GRAPH_METHODS and toa_graph.methods entry points
