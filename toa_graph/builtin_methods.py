"""The built-in sampling methods, one :class:`~toa_graph.method_spec.MethodSpec` each.

A new built-in method is its module under ``toa_graph/methods/`` plus one entry in
:data:`BUILTIN_METHODS`; everything else (the CLI's ``--method`` choices and ``--set``
help, config validation, the server's models, synthesis, compare, chat, exports, dataset
cards, Studio's ``graphs/`` and ``langgraph.json``) reads the registry. A method kept in
another package registers itself instead (:func:`toa_graph.registry.register_method`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from toa_graph.context import AbmctsContext, DebateContext, MoaContext, ToaContext
from toa_graph.method_spec import MethodOptions, MethodSpec

__all__ = ["BUILTIN_METHODS", "TOA_CITATION", "AbmctsOptions", "DebateOptions", "MoaOptions"]

TOA_CITATION = """@misc{ye2024multiagentsampling,
  title={Multi-Agent Sampling: Scaling Inference Compute for Data Synthesis with Tree Search-Based Agentic Collaboration},
  author={Hai Ye and Mingbao Lin and Hwee Tou Ng and Shuicheng Yan},
  year={2024},
  eprint={2412.17061},
  archivePrefix={arXiv},
  primaryClass={cs.CL},
  url={https://arxiv.org/abs/2412.17061}
}"""
MOA_CITATION = """@article{wang2024mixture,
  title={Mixture-of-Agents Enhances Large Language Model Capabilities},
  author={Wang, Junlin and Wang, Jue and Athiwaratkun, Ben and Zhang, Ce and Zou, James},
  journal={arXiv preprint arXiv:2406.04692},
  year={2024}
}"""
DR_CITATION = """@article{zhou2025debate,
  title={Debate, Reflect, and Distill: Multi-Agent Feedback with Tree-Structured Preference Optimization for Efficient Language Model Enhancement},
  author={Zhou, Xiaofeng and Huang, Heyan and Liao, Lizi},
  journal={arXiv preprint arXiv:2506.03541},
  year={2025}
}"""
ABMCTS_CITATION = """@inproceedings{inoue2025wider,
  title={Wider or Deeper? Scaling LLM Inference-Time Compute with Adaptive Branching Tree Search},
  author={Inoue, Yuichi and Misaki, Kou and Imajuku, Yuki and Kuroki, So and Nakamura, Taishi and Akiba, Takuya},
  booktitle={Advances in Neural Information Processing Systems},
  year={2025},
  note={arXiv:2503.04412}
}"""


class MoaOptions(MethodOptions):
    aggregator: str | None = Field(
        default=None,
        description="Agent writing one final answer from the last layer (costs one generation).",
        json_schema_extra={"agent": True},
    )


class DebateOptions(MethodOptions):
    """Debate has no factory options (every agent debates; D&R's student is whichever agent
    the exported data trains)."""


class AbmctsOptions(MethodOptions):
    algorithm: Literal["abmcts-a", "abmcts-m"] = Field(
        default="abmcts-a",
        description="TreeQuest's ABMCTSA, or ABMCTSM (the abmcts-m extra: PyMC MCMC per ask).",
    )


BUILTIN_METHODS: tuple[MethodSpec, ...] = (
    MethodSpec(
        name="random",
        factory_path="toa_graph.methods.random_sampling:create_random_sampling_graph",
        description="Best of N samples from one agent.",
        reference="TOA paper baseline (oceanypt/TOA code/ensemble_methods.py)",
        studio_module="random_sampling",
    ),
    MethodSpec(
        name="prs",
        factory_path="toa_graph.methods.prs:create_prs_graph",
        description="Preference-guided reflective sampling: sample, pick the best, refine it.",
        reference="TOA paper baseline PRS (oceanypt/TOA code/ensemble_methods.py)",
    ),
    MethodSpec(
        name="ensemble",
        factory_path="toa_graph.methods.ensemble:create_ensemble_graph",
        description="Every agent samples its share of the budget in parallel.",
        reference="TOA paper baseline (oceanypt/TOA code/ensemble_methods.py)",
    ),
    MethodSpec(
        name="seq_refine",
        factory_path="toa_graph.methods.seq_refine:create_seq_refine_graph",
        description="Independent chains, each reshuffling the agents: a fresh answer, then each "
        "agent refines the previous step's answer.",
        reference="TOA paper baseline Seq_thread (oceanypt/TOA code/ensemble_methods.py)",
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
        citation=MOA_CITATION,
    ),
    MethodSpec(
        name="debate",
        factory_path="toa_graph.methods.debate:create_debate_graph",
        context=DebateContext,
        options=DebateOptions,
        description="Debate & Reflect: agents debate; correct ones give feedback, others reflect.",
        reference="D&R (zhouxiaofengshelf/D-R debate_teachers_student_w_critique.py)",
        citation=DR_CITATION,
        export_kinds=("dr-sft", "tdpo"),
        check_input_path="toa_graph.methods.debate:check_debate_input",
    ),
    MethodSpec(
        name="toa",
        factory_path="toa_graph.methods.toa:create_toa_graph",
        context=ToaContext,
        description="Tree search over agents and responses steered by a reward model.",
        reference="TOA, arXiv 2412.17061 (oceanypt/TOA code/ensemble_methods.py)",
        citation=TOA_CITATION,
    ),
    MethodSpec(
        name="abmcts",
        factory_path="toa_graph.methods.abmcts:create_abmcts_graph",
        context=AbmctsContext,
        options=AbmctsOptions,
        description="AB-MCTS: TreeQuest's Thompson-sampling tree search over agents "
        "(answer afresh or refine a response), on TOA's nodes.",
        reference="AB-MCTS, arXiv 2503.04412 (SakanaAI/treequest ABMCTSA)",
        citation=ABMCTS_CITATION,
    ),
)
"""The built-in methods, in the order they are listed in."""
