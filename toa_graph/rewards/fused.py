"""A lean, padding-free forward for Llama-family sequence-classification reward models.

transformers' eager decoder spends a fair share of a large scoring batch outside the
matrix multiplies: separate q/k/v and gate/up GEMMs, RMSNorm and rotary embeddings as
chains of small element-wise kernels, and the last layer's o-proj and MLP computed for
every token although only each sequence's last token is scored. :class:`FusedDecoder`
runs the *same weights* with:

- one QKV GEMM and one gate-up GEMM per layer: the model's own ``q/k/v_proj`` and
  ``gate/up_proj`` weights are moved into one fused tensor each and the original
  parameters become views of it, so no memory is duplicated and the transformers
  model keeps working (and scoring identically) afterwards;
- residual-add + RMSNorm, rotary embedding and SiLU-and-multiply as single element-wise
  functions, compiled with ``torch.compile`` on CUDA (``compile=None``), eager elsewhere;
  if compilation fails the eager versions are used, with a warning;
- the last layer's o-proj, MLP and the final norm computed for each sequence's last
  token only;
- sequences packed into one row with no padding; attention per sequence through the
  same varlen kernel as the packed transformers path (a per-sequence causal SDPA loop
  where that kernel is missing).

Supported: ``llama``, ``mistral`` (without an active sliding window) and ``qwen2``
(q/k/v biases) with SiLU MLPs and a linear ``.score`` head. :func:`fusable` says why
another model is not. Scores equal the transformers forward's within float tolerance
(exactly the same arithmetic in float32; bf16 rounding may differ slightly).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toa_graph.rewards.base import RewardError
from toa_graph.rewards.batching import is_oom_error

__all__ = ["FusedDecoder", "fusable"]

logger = logging.getLogger(__name__)

SUPPORTED = ("llama", "mistral", "qwen2")


def fusable(model: Any, max_length: int | None = None) -> str | None:
    """``None`` when :class:`FusedDecoder` can run ``model``, else the reason it cannot."""
    import torch

    cfg: Any = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED:
        return f"model_type {kind!r} is not one of {', '.join(SUPPORTED)}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"hidden_act {cfg.hidden_act!r} (only silu is fused)"
    window = getattr(cfg, "sliding_window", None)
    if kind == "qwen2" and not getattr(cfg, "use_sliding_window", False):
        window = None
    if window is not None and (max_length is None or window < max_length):
        return f"sliding window {window} shorter than max_length {max_length}"
    score = getattr(model, "score", None)
    backbone = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if not isinstance(score, torch.nn.Linear) or backbone is None:
        return "no linear .score head on a decoder backbone"
    layers = getattr(backbone, "layers", None)
    if not layers:
        return "backbone has no .layers"
    for name in ("embed_tokens", "norm", "rotary_emb"):
        if getattr(backbone, name, None) is None:
            return f"backbone has no .{name}"
    attn, mlp = layers[0].self_attn, layers[0].mlp
    for part, names in (
        (attn, ("q_proj", "k_proj", "v_proj", "o_proj")),
        (mlp, ("gate_proj", "up_proj", "down_proj")),
    ):
        for n in names:
            if not isinstance(getattr(part, n, None), torch.nn.Linear):
                return f"layer has no linear {n}"
    if getattr(attn, "q_norm", None) is not None or getattr(attn, "k_norm", None) is not None:
        return "per-head q/k norms are not fused"
    return None


# --------------------------------------------------------------- element-wise pieces


def _rms(x: Any, w: Any, eps: float) -> Any:
    import torch

    v = x.float()
    v = v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)
    return w * v.to(x.dtype)


def _add_rms(h: Any, delta: Any, w: Any, eps: float) -> tuple[Any, Any]:
    h = h + delta
    return h, _rms(h, w, eps)


def _rotate_half(x: Any) -> Any:
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(q: Any, k: Any, cos: Any, sin: Any) -> tuple[Any, Any]:
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _silu_mul(gu: Any) -> Any:
    import torch.nn.functional as F

    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate) * up


@dataclass(slots=True)
class _Kernels:
    rms: Callable[..., Any]
    add_rms: Callable[..., Any]
    rope: Callable[..., Any]
    silu_mul: Callable[..., Any]


_EAGER = _Kernels(_rms, _add_rms, _rope, _silu_mul)
_compiled: _Kernels | None = None
_lock = threading.Lock()


def _compiled_kernels() -> _Kernels:
    global _compiled
    with _lock:
        if _compiled is None:
            import torch

            def c(fn: Callable[..., Any]) -> Callable[..., Any]:
                return torch.compile(fn, dynamic=True, fullgraph=True)

            _compiled = _Kernels(c(_rms), c(_add_rms), c(_rope), c(_silu_mul))
        return _compiled


# --------------------------------------------------------------- weights


@dataclass(slots=True)
class _Layer:
    in_norm: Any
    post_norm: Any
    wqkv: Any
    bqkv: Any
    wo: Any
    bo: Any
    wgu: Any
    bgu: Any
    wd: Any
    bd: Any


def _fuse(linears: list[Any]) -> tuple[Any, Any]:
    """Concatenate the linears' weights (and biases) into one tensor each and make the
    original parameters views of it, so the memory is not doubled."""
    import torch

    w = torch.cat([lin.weight.detach() for lin in linears], dim=0)
    biases = [lin.bias for lin in linears]
    b = None
    if any(x is not None for x in biases):
        b = torch.cat(
            [
                x.detach()
                if x is not None
                else torch.zeros(lin.out_features, dtype=w.dtype, device=w.device)
                for x, lin in zip(biases, linears, strict=True)
            ]
        )
    start = 0
    for lin in linears:
        n = lin.out_features
        lin.weight.data = w[start : start + n]
        if lin.bias is not None and b is not None:
            lin.bias.data = b[start : start + n]
        start += n
    return w, b


_FUSED: weakref.WeakKeyDictionary[Any, list[tuple[Any, Any, Any, Any]]] = (
    weakref.WeakKeyDictionary()
)
"""Per model: each layer's fused (wqkv, bqkv, wgu, bgu), so a second decoder reuses them."""


class FusedDecoder:
    """Scores packed sequences with a Llama-family seq-cls model's weights (see module doc).

    Args:
        model: a loaded model for which :func:`fusable` returns ``None``; its q/k/v and
            gate/up weights are re-laid out in place (the model still works unchanged).
        compile: compile the element-wise pieces with ``torch.compile``; ``None``: on CUDA.
    """

    def __init__(self, model: Any, *, compile: bool | None = None) -> None:
        reason = fusable(model)
        if reason is not None:
            raise RewardError(f"fused forward not available: {reason}")
        cfg = model.config
        backbone = getattr(model, model.base_model_prefix)
        self.embed = backbone.embed_tokens
        self.rotary = backbone.rotary_emb
        self.norm_w = backbone.norm.weight
        self.eps = float(getattr(backbone.norm, "variance_epsilon", cfg.rms_norm_eps))
        self.score_w = model.score.weight
        self.score_b = model.score.bias
        self.n_heads = int(cfg.num_attention_heads)
        self.n_kv = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
        attn0 = backbone.layers[0].self_attn
        self.head_dim = int(attn0.head_dim)
        self.scaling = float(attn0.scaling)
        with _lock:
            fused = _FUSED.get(model)
            q0 = backbone.layers[0].self_attn.q_proj.weight
            if fused is not None and q0.data_ptr() != fused[0][0].data_ptr():
                fused = None  # the model was moved or its weights replaced since: fuse again
            if fused is None:
                fused = [
                    (
                        *_fuse([la.self_attn.q_proj, la.self_attn.k_proj, la.self_attn.v_proj]),
                        *_fuse([la.mlp.gate_proj, la.mlp.up_proj]),
                    )
                    for la in backbone.layers
                ]
                _FUSED[model] = fused
        self.layers: list[_Layer] = []
        for layer, (wqkv, bqkv, wgu, bgu) in zip(backbone.layers, fused, strict=True):
            a, m = layer.self_attn, layer.mlp
            self.layers.append(
                _Layer(
                    in_norm=layer.input_layernorm.weight,
                    post_norm=layer.post_attention_layernorm.weight,
                    wqkv=wqkv,
                    bqkv=bqkv,
                    wo=a.o_proj.weight,
                    bo=a.o_proj.bias,
                    wgu=wgu,
                    bgu=bgu,
                    wd=m.down_proj.weight,
                    bd=m.down_proj.bias,
                )
            )
        self.device = self.norm_w.device
        if compile is None:
            compile = self.device.type == "cuda"
        self.compile = bool(compile)
        self._k = _compiled_kernels() if self.compile else _EAGER

    def __call__(self, ids: Any, position_ids: Any, cu: Any, max_len: int) -> Any:
        """Scores of the packed sequences: ``ids`` and ``position_ids`` are ``[T]``,
        ``cu`` (int32 ``[N+1]``) their boundaries; returns ``[N]`` in the model's dtype."""
        if self.compile:
            try:
                return self._forward(self._k, ids, position_ids, cu, max_len)
            except Exception as exc:  # a compiler problem must not stop scoring
                if isinstance(exc, RewardError) or is_oom_error(exc):
                    raise
                logger.warning(
                    "torch.compile of the fused reward forward failed (%s); using eager kernels",
                    exc,
                )
                self.compile = False
                self._k = _EAGER
        return self._forward(self._k, ids, position_ids, cu, max_len)

    def _forward(self, k: _Kernels, ids: Any, position_ids: Any, cu: Any, max_len: int) -> Any:
        import torch.nn.functional as F

        from toa_graph.rewards.varlen import varlen_attend

        t = ids.shape[0]
        nq, nkv, hd = self.n_heads, self.n_kv, self.head_dim
        last = cu[1:].long() - 1
        h = F.embedding(ids, self.embed.weight)
        cos, sin = self.rotary(h.unsqueeze(0), position_ids.unsqueeze(0))
        cos, sin = cos[0], sin[0]
        x = k.rms(h, self.layers[0].in_norm, self.eps)
        n_layers = len(self.layers)
        for i, layer in enumerate(self.layers):
            qkv = F.linear(x, layer.wqkv, layer.bqkv)
            q, kk, v = qkv.split([nq * hd, nkv * hd, nkv * hd], dim=-1)
            q, kk = k.rope(q.view(t, nq, hd), kk.view(t, nkv, hd), cos, sin)
            attn = varlen_attend(q, kk, v.view(t, nkv, hd), cu, max_len, self.scaling)
            attn = attn.reshape(attn.shape[0], nq * hd)
            if i == n_layers - 1:  # only the scored (last) tokens go further
                attn, h = attn[last], h[last]
            h, x = k.add_rms(h, F.linear(attn, layer.wo, layer.bo), layer.post_norm, self.eps)
            mlp = F.linear(k.silu_mul(F.linear(x, layer.wgu, layer.bgu)), layer.wd, layer.bd)
            nxt = self.layers[i + 1].in_norm if i + 1 < n_layers else self.norm_w
            h, x = k.add_rms(h, mlp, nxt, self.eps)
        return F.linear(x, self.score_w, self.score_b)[:, 0]
