"""COMET / COMET-KIWI translation reward (``pip install 'toa-graph[comet]'``).

``src`` is the prompt text (a string prompt, or the last user message), ``mt`` the
response, and ``ref`` the first reference translation when the model is reference-based
(any COMET model whose name does not say ``kiwi``; those raise without a reference).
``unbabel-comet`` is imported on first use, never at import time. Calls from concurrent
graph runs are batched through :class:`~toa_graph.rewards.batching.BatchingReward`, and
each batch is one ``model.predict`` call in the forward thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toa_graph.rewards.base import RewardError
from toa_graph.rewards.batching import BatchingReward
from toa_graph.state import Prompt
from toa_graph.text import content_text

if TYPE_CHECKING:  # pragma: no cover
    from toa_graph.config import CometRewardConfig

__all__ = ["CometReward", "CometScorer", "source_text"]

_MISSING = (
    "the comet reward needs unbabel-comet: pip install 'toa-graph[comet]' "
    "(or pip install unbabel-comet)"
)


def source_text(prompt: Prompt) -> str:
    """The text to translate: the prompt string, or the last user message's content."""
    if isinstance(prompt, str):
        return prompt
    for m in reversed(prompt):
        if m.get("role") == "user":
            return content_text(m.get("content"))
    raise RewardError("comet reward: the prompt has no user message to use as source")


@dataclass(slots=True)
class CometItem:
    src: str
    mt: str
    ref: str | None

    @property
    def n_tokens(self) -> int:  # a rough length for batching (chars / 4)
        return max(1, (len(self.src) + len(self.mt) + len(self.ref or "")) // 4)


class CometScorer:
    """Scores (source, translation[, reference]) triples with a COMET checkpoint."""

    def __init__(self, model_name: str, *, device: str = "cuda:0", batch_size: int = 16) -> None:
        self.model_name = model_name
        self.name = f"comet:{model_name}"
        self.device = device
        self.batch_size = batch_size
        self.reference_based = "kiwi" not in model_name.lower()
        self.padded = True
        self._model: Any = None

    def load(self) -> Any:
        if self._model is None:
            try:
                import comet
            except ImportError as exc:
                raise RewardError(_MISSING) from exc
            try:
                path = comet.download_model(self.model_name)
                self._model = comet.load_from_checkpoint(path)
            except Exception as exc:
                raise RewardError(f"{self.name}: could not load the model: {exc}") from exc
        return self._model

    def prepare(self, prompt: Prompt, response: str, reference: str | None = None) -> CometItem:
        if self.reference_based and not reference:
            raise RewardError(
                f"{self.name} is reference-based: the prompt needs a reference translation "
                "(or use a COMET-KIWI model for reference-free scoring)"
            )
        return CometItem(source_text(prompt), response, reference if self.reference_based else None)

    def score_batch(self, items: Sequence[CometItem]) -> list[float]:
        model = self.load()
        data = []
        for it in items:
            row = {"src": it.src, "mt": it.mt}
            if it.ref is not None:
                row["ref"] = it.ref
            data.append(row)
        gpus = 1 if str(self.device).startswith("cuda") else 0
        out = model.predict(data, batch_size=self.batch_size, gpus=gpus, progress_bar=False)
        scores = out["scores"] if isinstance(out, dict) else out.scores
        return [float(s) for s in scores]


class CometReward(BatchingReward):
    """COMET(-KIWI) behind the cross-run batching layer."""

    scorer: CometScorer

    def __init__(
        self,
        model_name: str = "Unbabel/wmt22-cometkiwi-da",
        *,
        device: str = "cuda:0",
        batch_size: int = 16,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
    ) -> None:
        scorer = CometScorer(model_name, device=device, batch_size=batch_size)
        super().__init__(
            scorer,
            batch_tokens=1 << 30,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            name=scorer.name,
        )

    @classmethod
    def from_config(cls, cfg: CometRewardConfig, *, agents: Any = ()) -> CometReward:
        return cls(cfg.model, device=cfg.device, batch_size=cfg.batch_size)
