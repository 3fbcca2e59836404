"""Synthesis on a Ray cluster; kept as an import path. The code lives in
:mod:`toa_graph.synthesis.ray_driver` (the driver) and
:mod:`toa_graph.synthesis.ray_workers` (session, reward actor, worker actor)."""

from toa_graph.synthesis.ray_driver import (
    DistributedError,
    DistributedSummary,
    RayDriver,
    RayOptions,
    run_distributed,
    synthesize_distributed,
)
from toa_graph.synthesis.ray_workers import (
    LOOPBACK_ENV,
    REMOTE_REWARD_KINDS,
    RemoteReward,
    RewardActor,
    SynthesisWorker,
    import_ray,
    ray_session,
    start_reward_actor,
)

__all__ = [
    "LOOPBACK_ENV",
    "REMOTE_REWARD_KINDS",
    "DistributedError",
    "DistributedSummary",
    "RayDriver",
    "RayOptions",
    "RemoteReward",
    "RewardActor",
    "SynthesisWorker",
    "import_ray",
    "ray_session",
    "run_distributed",
    "start_reward_actor",
    "synthesize_distributed",
]
