"""Transformers sequence-classification reward models (Skywork-Reward, ArmoRM, ...).

The conversation ``[user prompt (or the given messages), assistant response]`` goes
through the tokenizer's chat template; the model's score for the last token is the
reward. Two head styles are handled:

- Skywork-Reward-Llama-3.1-8B-v0.2 style (``AutoModelForSequenceClassification``,
  ``num_labels=1``): one logit;
- ArmoRM style (custom code whose output has ``.score``): needs ``trust_remote_code``,
  which is used only when the config sets it explicitly.

Inputs are right-padded and run *without* an attention mask: with right padding and a
causal model, every real token only ever attends to real tokens, so the last real token's
score is exactly the unpadded one, and SDPA can take its fused causal (flash) path instead
of a dense masked one. With ``packing`` (the default on CUDA where
``torch.nn.attention.varlen`` exists; ``packing=True`` forces it), the batch is packed into one row
with no padding at all and attention runs per sequence (varlen flash attention on CUDA
through ``torch.nn.attention.varlen`` when present, a per-sequence loop elsewhere).

Inputs longer than ``max_length`` are truncated from the *left of the context* (the BOS
token stays, then the oldest prompt tokens go first; the response end is always kept),
with a logged warning, never dropped.

``HFReward`` is the ready :class:`~toa_graph.rewards.base.RewardModel`: an
:class:`HFScorer` behind a :class:`~toa_graph.rewards.batching.BatchingReward`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toa_graph.rewards.base import RewardError
from toa_graph.rewards.batching import BatchingReward
from toa_graph.rewards.varlen import (  # noqa: F401  (VARLEN_ATTN, varlen_attend: re-exported)
    VARLEN_ATTN,
    register_varlen_attention,
    varlen_attend,
    varlen_kernel_available,
)
from toa_graph.state import Prompt
from toa_graph.text import prompt_messages

if TYPE_CHECKING:  # pragma: no cover
    from toa_graph.config import HFRewardConfig
    from toa_graph.rewards.fused import FusedDecoder

__all__ = ["EncodedPair", "HFReward", "HFScorer", "resolve_device_dtype", "to_messages"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class EncodedPair:
    """One tokenised (prompt, response) conversation, ready for a forward pass."""

    ids: list[int]
    truncated: int = 0
    """Tokens dropped from the left of the context (0 when it fitted)."""

    @property
    def n_tokens(self) -> int:
        return len(self.ids)


def to_messages(prompt: Prompt, response: str) -> list[dict[str, Any]]:
    """``[user prompt (or the given messages), assistant response]``."""
    return [*prompt_messages(prompt), {"role": "assistant", "content": response}]


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """``auto`` device: CUDA when available, else CPU; ``auto`` dtype: bf16 on GPU, fp32 on CPU."""
    import torch

    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RewardError(
            f"reward model device {device!r} asked for, but CUDA is not available here "
            "(set device: cpu or device: auto in the reward config)"
        )
    if dtype == "auto":
        dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    else:
        dt = getattr(torch, dtype)
    return dev, dt


# --------------------------------------------------------------- the scorer


class HFScorer:
    """Tokenises conversations and scores batches with a sequence-classification model.

    Args:
        model: a loaded ``*ForSequenceClassification`` (or ArmoRM-style) model, in eval mode.
        tokenizer: its tokenizer, with a chat template.
        max_length: longest input in tokens; longer ones are left-truncated (see module doc).
        packing: pack each batch into one row without padding (see module doc); ``None``:
            on where CUDA and ``torch.nn.attention.varlen`` are available (linear heads).
        fused: score packed batches with :class:`~toa_graph.rewards.fused.FusedDecoder`
            (fused QKV / gate-up GEMMs, compiled element-wise kernels on CUDA, last layer
            on the scored tokens only); implies packing. Llama / Mistral / Qwen2 only.
        name: used in logs and errors.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = 4096,
        packing: bool | None = False,
        fused: bool = False,
        name: str | None = None,
    ) -> None:
        if getattr(tokenizer, "chat_template", None) is None:
            raise RewardError(
                f"tokenizer of reward model {name or type(model).__name__} has no chat template"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.name = name or getattr(getattr(model, "config", None), "_name_or_path", "") or "hf"
        self.device = next(model.parameters()).device
        self.pad_id = _pad_id(tokenizer, model)
        self.bos_id = getattr(tokenizer, "bos_token_id", None)
        self.truncations = 0
        self._head = self._detect_head()
        self.fused: FusedDecoder | None = None
        if fused:
            from toa_graph.rewards.fused import FusedDecoder, fusable

            reason = fusable(model, self.max_length)
            if reason is not None:
                raise RewardError(f"{self.name}: fused forward not available: {reason}")
            self.fused = FusedDecoder(model)
            packing = True
        if packing is None:  # auto: where the fused varlen kernel exists
            packing = (
                self._head == "linear" and self.device.type == "cuda" and varlen_kernel_available()
            )
        self.packing = bool(packing)
        if self.packing and self.fused is None:
            if self._head != "linear":
                raise RewardError(f"{self.name}: packing needs a linear .score head")
            name_ = register_varlen_attention()
            try:
                model.set_attn_implementation(name_)
            except Exception:
                model.config._attn_implementation = name_

    @property
    def padded(self) -> bool:
        """Whether a batch costs ``items x longest`` tokens (False when packing)."""
        return not self.packing

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(
        cls,
        model_name: str,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_length: int = 4096,
        trust_remote_code: bool = False,
        attn_implementation: str | None = None,
        packing: bool | None = None,
        fused: bool = False,
    ) -> HFScorer:
        """Load a reward model and its tokenizer from the Hub or a local folder."""
        try:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:  # pragma: no cover
            raise RewardError(
                "the hf reward needs `transformers` (pip install transformers)"
            ) from exc
        dev, dt = resolve_device_dtype(device, dtype)
        kwargs: dict[str, Any] = {"dtype": dt, "trust_remote_code": bool(trust_remote_code)}
        if attn_implementation:
            kwargs["attn_implementation"] = attn_implementation
        elif dev.type == "cuda":
            kwargs["attn_implementation"] = "sdpa"
        try:
            tok = AutoTokenizer.from_pretrained(
                model_name, trust_remote_code=bool(trust_remote_code)
            )
            model = AutoModelForSequenceClassification.from_pretrained(model_name, **kwargs)
        except ValueError as exc:
            if "trust_remote_code" in str(exc) and not trust_remote_code:
                raise RewardError(
                    f"reward model {model_name!r} needs custom code; set trust_remote_code: true in "
                    "its reward config if you trust it (e.g. ArmoRM)"
                ) from exc
            raise RewardError(f"could not load reward model {model_name!r}: {exc}") from exc
        except OSError as exc:
            raise RewardError(f"could not load reward model {model_name!r}: {exc}") from exc
        model.to(dev)
        return cls(model, tok, max_length=max_length, packing=packing, fused=fused, name=model_name)

    def _detect_head(self) -> str:
        """``linear``: backbone + ``.score`` Linear (Llama/Mistral/Qwen/Gemma seq-cls);
        ``custom``: call the model and read ``.score`` (ArmoRM) or ``.logits``."""
        import torch

        m = self.model
        prefix = getattr(m, "base_model_prefix", "model")
        if (
            isinstance(getattr(m, "score", None), torch.nn.Linear)
            and getattr(m, prefix, None) is not None
            and type(m).__module__.startswith("transformers.")
        ):
            if m.score.out_features != 1:
                logger.warning(
                    "%s: score head has %d outputs; using the first as the reward",
                    self.name,
                    m.score.out_features,
                )
            return "linear"
        cfg = getattr(m, "config", None)
        if cfg is not None and getattr(cfg, "pad_token_id", None) is None:
            cfg.pad_token_id = self.pad_id
        return "custom"

    # ---------------------------------------------------------------- tokenising

    def _render(self, messages: list[dict[str, Any]], *, generation_prompt: bool = False) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=generation_prompt
            )
        except Exception as exc:
            raise RewardError(f"{self.name}: chat template failed: {exc}") from exc

    def _encode(self, texts: list[str]) -> list[list[int]]:
        enc = self.tokenizer(texts, add_special_tokens=False)
        return [list(x) for x in enc["input_ids"]]

    def prepare(self, prompt: Prompt, response: str, reference: str | None = None) -> EncodedPair:
        return self.prepare_many(prompt, [response], reference)[0]

    def prepare_many(
        self, prompt: Prompt, responses: Sequence[str], reference: str | None = None
    ) -> list[EncodedPair]:
        """Tokenise ``[prompt, response]`` conversations (truncating where too long)."""
        texts = [self._render(to_messages(prompt, r)) for r in responses]
        all_ids = self._encode(texts)
        out: list[EncodedPair] = []
        n_prefix: int | None = None
        for ids in all_ids:
            if len(ids) <= self.max_length:
                out.append(EncodedPair(ids))
                continue
            if n_prefix is None:
                base = to_messages(prompt, "")[:-1]
                n_prefix = len(self._encode([self._render(base, generation_prompt=True)])[0])
            out.append(self._truncate(ids, n_prefix))
        return out

    def _truncate(self, ids: list[int], n_prefix: int) -> EncodedPair:
        """Drop tokens from the left of the context (after BOS), keeping the response end."""
        limit = self.max_length
        over = len(ids) - limit
        head = 1 if ids and self.bos_id is not None and ids[0] == self.bos_id else 0
        droppable = max(0, min(n_prefix, len(ids)) - head)
        if over <= droppable:
            new = ids[:head] + ids[head + over :]
            what = "context"
        else:  # the response alone is too long: no context left, response cut from its left
            new = ids[:head] + ids[len(ids) - (limit - head) :]
            what = "whole context and the start of the response"
        self.truncations += 1
        logger.warning(
            "%s: input of %d tokens exceeds max_length=%d; dropped %d tokens from the left (%s)",
            self.name,
            len(ids),
            limit,
            len(ids) - len(new),
            what,
        )
        return EncodedPair(new, truncated=len(ids) - len(new))

    # ---------------------------------------------------------------- scoring

    def score(self, prompt: Prompt, responses: Sequence[str]) -> list[float]:
        """Synchronous convenience: one forward over the responses to one prompt."""
        return self.score_batch(self.prepare_many(prompt, list(responses)))

    def score_batch(self, items: Sequence[EncodedPair]) -> list[float]:
        """One forward pass over the items; one float per item, in order."""
        import torch

        if not items:
            return []
        with torch.inference_mode():
            scores = self._forward_packed(items) if self.packing else self._forward_padded(items)
            return scores.float().cpu().tolist()

    def _forward_padded(self, items: Sequence[EncodedPair]) -> Any:
        import torch

        lengths = [max(1, it.n_tokens) for it in items]
        width = max(lengths)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        for row, it in enumerate(items):
            if it.ids:
                ids[row, : it.n_tokens] = torch.as_tensor(it.ids, dtype=torch.long)
        ids = ids.to(self.device, non_blocking=True)
        last = torch.as_tensor([n - 1 for n in lengths], dtype=torch.long).to(self.device)
        rows = torch.arange(len(items), device=self.device)
        m = self.model
        # Right padding, no mask: each real token sees only real tokens (causal), so the
        # last real token's hidden state equals the unpadded one.
        if self._head == "linear":
            backbone = getattr(m, m.base_model_prefix)
            hidden = backbone(input_ids=ids, use_cache=False).last_hidden_state
            return m.score(hidden[rows, last])[:, 0]
        out = m(input_ids=ids, use_cache=False)
        return _custom_scores(out, rows, last)

    def _forward_packed(self, items: Sequence[EncodedPair]) -> Any:
        import torch

        lengths = [max(1, it.n_tokens) for it in items]
        flat: list[int] = []
        pos: list[int] = []
        for it, n in zip(items, lengths, strict=True):
            flat.extend(it.ids or [self.pad_id])
            pos.extend(range(n))
        cu_list = [0]
        for n in lengths:
            cu_list.append(cu_list[-1] + n)
        ids = torch.as_tensor(flat, dtype=torch.long).unsqueeze(0).to(self.device)
        position_ids = torch.as_tensor(pos, dtype=torch.long).unsqueeze(0).to(self.device)
        cu = torch.as_tensor(cu_list, dtype=torch.int32).to(self.device)
        if self.fused is not None:
            return self.fused(ids[0], position_ids[0], cu, max(lengths))
        last = torch.as_tensor(cu_list[1:], dtype=torch.long).to(self.device) - 1
        m = self.model
        backbone = getattr(m, m.base_model_prefix)
        hidden = backbone(
            input_ids=ids,
            position_ids=position_ids,
            use_cache=False,
            cu_seq_lens_q=cu,
            cu_seq_lens_k=cu,
            max_length_q=max(lengths),
            max_length_k=max(lengths),
        ).last_hidden_state
        return m.score(hidden[0, last])[:, 0]


def _custom_scores(out: Any, rows: Any, last: Any) -> Any:
    score = getattr(out, "score", None)
    if score is None and isinstance(out, dict):
        score = out.get("score")
    if score is None:
        score = out.logits
    if score.dim() == 3:  # per-token scores: pick each row's last real token
        score = score[rows, last]
    if score.dim() == 2:
        score = score[:, 0]
    return score


def _pad_id(tokenizer: Any, model: Any) -> int:
    for cand in (
        getattr(tokenizer, "pad_token_id", None),
        getattr(getattr(model, "config", None), "pad_token_id", None),
        getattr(tokenizer, "eos_token_id", None),
    ):
        if isinstance(cand, int):
            return cand
    return 0


# --------------------------------------------------------------- the reward model


class HFReward(BatchingReward):
    """Transformers reward model behind the cross-run batching layer.

    >>> # reward = HFReward.from_config(HFRewardConfig(kind="hf", model="Skywork/..."))
    >>> # await reward.ascore("2+2?", ["4", "5"])
    """

    scorer: HFScorer

    def __init__(
        self,
        scorer: HFScorer,
        *,
        batch_tokens: int = 32768,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
    ) -> None:
        super().__init__(
            scorer,
            batch_tokens=batch_tokens,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            name=scorer.name,
        )

    @classmethod
    def from_model(
        cls,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = 4096,
        packing: bool = False,
        fused: bool = False,
        batch_tokens: int = 32768,
        max_batch_size: int = 64,
        max_wait_ms: float = 5.0,
        name: str | None = None,
    ) -> HFReward:
        """Wrap an already loaded model and tokenizer."""
        scorer = HFScorer(
            model, tokenizer, max_length=max_length, packing=packing, fused=fused, name=name
        )
        return cls(
            scorer,
            batch_tokens=batch_tokens,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
        )

    @classmethod
    def from_config(cls, cfg: HFRewardConfig, *, agents: Any = ()) -> HFReward:
        """Load the model named in an :class:`~toa_graph.config.HFRewardConfig`."""
        scorer = HFScorer.load(
            cfg.model,
            device=cfg.device,
            dtype=cfg.dtype,
            max_length=cfg.max_length,
            trust_remote_code=cfg.trust_remote_code,
            attn_implementation=getattr(cfg, "attn_implementation", None),
            packing=getattr(cfg, "packing", None),
            fused=bool(getattr(cfg, "fused", False)),
        )
        return cls(
            scorer,
            batch_tokens=cfg.batch_tokens,
            max_batch_size=cfg.max_batch_size,
            max_wait_ms=cfg.max_wait_ms,
        )
