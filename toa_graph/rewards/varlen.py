"""Padding-free ("varlen") causal attention over sequences packed in one row.

Shared by the transformers scorer (:mod:`toa_graph.rewards.hf`, registered as a
transformers attention backend) and the fused decoder (:mod:`toa_graph.rewards.fused`),
so neither imports the other for it. Torch and transformers are imported on first use.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
from typing import Any

__all__ = ["VARLEN_ATTN", "register_varlen_attention", "varlen_attend", "varlen_kernel_available"]

VARLEN_ATTN = "toa_varlen"
"""Name under which the padding-free attention is registered with transformers."""

_varlen_lock = threading.Lock()
_varlen_registered = False


@functools.cache
def _varlen_kernel() -> Any | None:
    try:
        from torch.nn.attention.varlen import varlen_attn
    except Exception:
        return None
    return varlen_attn


def varlen_kernel_available() -> bool:
    """Whether this torch has the varlen flash kernel (``torch.nn.attention.varlen``)."""
    return _varlen_kernel() is not None


@functools.cache
def _varlen_params() -> frozenset[str]:
    """The varlen kernel's parameter names (its signature differs between torch versions);
    looked up once, not on every layer of every forward."""
    kernel = _varlen_kernel()
    return frozenset(inspect.signature(kernel).parameters) if kernel is not None else frozenset()


def varlen_attend(q: Any, k: Any, v: Any, cu: Any, max_len: int, scale: float | None) -> Any:
    """Causal attention over sequences packed in one row.

    ``q`` is ``[T, Hq, D]``, ``k``/``v`` ``[T, Hkv, D]`` (grouped-query heads allowed),
    ``cu`` the int32 ``[N+1]`` sequence boundaries; returns ``[T, Hq, D]``. Uses the varlen
    flash kernel (``torch.nn.attention.varlen``) on CUDA, one causal SDPA per sequence
    elsewhere."""
    import torch
    import torch.nn.functional as F

    hq, hkv = q.shape[1], k.shape[1]
    kernel = _varlen_kernel() if q.is_cuda else None
    if kernel is not None:
        params = _varlen_params()
        extra: dict[str, Any] = {"scale": scale}
        if "window_size" in params:
            extra["window_size"] = (-1, 0)
        elif "is_causal" in params:
            extra["is_causal"] = True
        if hq != hkv:
            if "enable_gqa" in params:
                extra["enable_gqa"] = True
            else:
                k = k.repeat_interleave(hq // hkv, dim=1)
                v = v.repeat_interleave(hq // hkv, dim=1)
        out = kernel(q, k, v, cu, cu, int(max_len), int(max_len), **extra)
        return out[0] if isinstance(out, tuple) else out
    # Portable fallback: one causal SDPA per sequence.
    if hq != hkv:
        k = k.repeat_interleave(hq // hkv, dim=1)
        v = v.repeat_interleave(hq // hkv, dim=1)
    outs = []
    for s, e in itertools.pairwise(cu.tolist()):
        qs, ks, vs = (t[s:e].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale)
        outs.append(o[0].transpose(0, 1))
    return torch.cat(outs, dim=0)


def _varlen_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers attention function over sequences packed in one row: ``query`` is
    ``[1, Hq, T, D]``; ``cu_seq_lens_q`` (int32, ``[N+1]``) and ``max_length_q`` come through
    the model's kwargs. Returns ``[1, T, Hq, D]`` as transformers' attention functions do."""
    cu = kwargs.get("cu_seq_lens_q")
    max_len = kwargs.get("max_length_q")
    if cu is None or max_len is None:  # an ordinary (unpacked, unmasked) call: causal SDPA
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, None, dropout=dropout, scaling=scaling, is_causal=True
        )
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [T, H, D]
    return varlen_attend(q, k, v, cu, int(max_len), scaling).unsqueeze(0), None


def _no_mask(*args: Any, **kwargs: Any) -> None:
    return None


def register_varlen_attention() -> str:
    """Register the padding-free attention with transformers (once) and return its name."""
    global _varlen_registered
    with _varlen_lock:
        if not _varlen_registered:
            from transformers import AttentionInterface

            AttentionInterface.register(VARLEN_ATTN, _varlen_attention)
            try:
                from transformers.masking_utils import AttentionMaskInterface

                AttentionMaskInterface.register(VARLEN_ATTN, _no_mask)
            except ImportError:  # pragma: no cover - older transformers
                pass
            _varlen_registered = True
    return VARLEN_ATTN
