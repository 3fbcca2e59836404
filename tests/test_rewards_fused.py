"""The fused padding-free reward forward (``toa_graph.rewards.fused``) against transformers.

Tiny random-weight Llama and Qwen2 classifiers are built inside the tests (no downloads);
every score is compared with the model's own transformers forward, one conversation at a
time.
"""

from __future__ import annotations

import logging

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tests.test_rewards_hf import (  # noqa: E402
    make_model,
    make_tokenizer,
    reference_scores,
    workload,  # noqa: F401  (fixture)
)
from toa_graph.rewards import fused as fused_mod  # noqa: E402
from toa_graph.rewards.base import RewardError  # noqa: E402
from toa_graph.rewards.batching import BatchingReward  # noqa: E402
from toa_graph.rewards.fused import FusedDecoder, fusable  # noqa: E402
from toa_graph.rewards.hf import HFReward, HFScorer  # noqa: E402


def tiny_classifier(arch: str, vocab_size: int, **overrides):
    """A random-weight ``<Arch>ForSequenceClassification`` (hidden 64, 4 heads, 1 label)."""
    import transformers

    name = {"qwen2": "Qwen2", "qwen3": "Qwen3", "mistral": "Mistral"}[arch]
    cfg = getattr(transformers, f"{name}Config")(
        **{
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 1,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "num_labels": 1,
            "pad_token_id": 0,
            **overrides,
        }
    )
    return getattr(transformers, f"{name}ForSequenceClassification")(cfg).float().eval()


def make_qwen2(vocab_size: int, *, seed: int = 0):
    torch.manual_seed(seed)
    model = tiny_classifier("qwen2", vocab_size, num_hidden_layers=3, num_key_value_heads=1)
    with torch.no_grad():  # q/k/v carry biases in Qwen2; make them matter
        for layer in model.model.layers:
            for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                lin.bias.normal_(0, 0.5)
        model.score.weight.normal_(0, 1.0)
    return model


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_fused_scores_equal_transformers_one_at_a_time(arch, workload):  # noqa: F811
    tok = make_tokenizer()
    model = make_model(len(tok), layers=3) if arch == "llama" else make_qwen2(len(tok))
    ref = reference_scores(model, tok, workload)
    scorer = HFScorer(model, tok, max_length=512, fused=True)
    assert scorer.fused is not None and scorer.packing and not scorer.padded
    items = [scorer.prepare(p, r) for p, r in workload]
    batched = scorer.score_batch(items)
    assert batched == pytest.approx(ref, abs=1e-4)
    single = [scorer.score_batch([it])[0] for it in items[:5]]
    assert single == pytest.approx(ref[:5], abs=1e-4)
    assert len({round(s, 3) for s in ref}) > 5  # the scores actually differ


def test_fusing_shares_weights_and_leaves_the_model_working(workload):  # noqa: F811
    tok = make_tokenizer()
    model = make_model(len(tok), layers=2, seed=3)
    before = reference_scores(model, tok, workload)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    dec = FusedDecoder(model)
    layer, attn = dec.layers[0], model.model.layers[0].self_attn
    # q/k/v are now views of the fused tensor: same memory, nothing copied twice
    assert attn.q_proj.weight.data_ptr() == layer.wqkv.data_ptr()
    assert attn.k_proj.weight.data_ptr() > layer.wqkv.data_ptr()
    assert model.model.layers[0].mlp.up_proj.weight.data_ptr() > layer.wgu.data_ptr()
    assert sum(p.numel() * p.element_size() for p in model.parameters()) == n_bytes
    assert reference_scores(model, tok, workload) == before
    # a second decoder on the same model reuses the fused tensors instead of re-fusing
    again = FusedDecoder(model)
    assert again.layers[0].wqkv is layer.wqkv
    # ... unless the weights were replaced since (here: moved to another dtype)
    model.double()
    moved = FusedDecoder(model)
    assert moved.layers[0].wqkv.dtype == torch.float64
    assert attn.q_proj.weight.data_ptr() == moved.layers[0].wqkv.data_ptr()


def test_truncated_inputs_score_like_the_truncated_conversation(caplog):
    tok = make_tokenizer()
    model = make_model(len(tok), layers=2, seed=4)
    plain = HFScorer(model, tok, max_length=40)
    fast = HFScorer(model, tok, max_length=40, fused=True)
    prompt = " ".join(f"w{i}" for i in range(60))
    with caplog.at_level(logging.WARNING):
        items = [fast.prepare(prompt, "w1 w2 w3"), fast.prepare("w5", "w6")]
    assert items[0].truncated > 0 and items[0].n_tokens == 40
    assert fast.score_batch(items) == pytest.approx(plain.score_batch(items), abs=1e-4)


def test_unsupported_models_are_refused_with_the_reason():
    tok = make_tokenizer()
    qwen3 = tiny_classifier("qwen3", len(tok))
    assert "qwen3" in (fusable(qwen3) or "")
    with pytest.raises(RewardError, match=r"fused forward not available.*qwen3"):
        HFScorer(qwen3, tok, max_length=64, fused=True)
    llama = make_model(len(tok))
    llama.config.hidden_act = "gelu"
    assert "gelu" in (fusable(llama) or "")
    mistral = tiny_classifier("mistral", len(tok), sliding_window=32)
    assert "sliding window 32" in (fusable(mistral, max_length=64) or "")
    assert fusable(mistral, max_length=32) is None


def test_compiled_kernels_match_and_take_new_lengths_without_error(workload):  # noqa: F811
    """The torch.compile path (the default on CUDA) computes the same scores; shapes change
    every batch, so it is compiled with dynamic shapes."""
    tok = make_tokenizer()
    model = make_model(len(tok), layers=2, seed=5)
    ref = reference_scores(model, tok, workload)
    scorer = HFScorer(model, tok, max_length=512, fused=True)
    assert scorer.fused is not None
    scorer.fused.compile, scorer.fused._k = True, fused_mod._compiled_kernels()
    items = [scorer.prepare(p, r) for p, r in workload]
    assert scorer.score_batch(items[:7]) == pytest.approx(ref[:7], abs=1e-4)
    assert scorer.score_batch(items[7:]) == pytest.approx(ref[7:], abs=1e-4)
    assert scorer.fused.compile  # still compiled: no fallback was needed


def test_a_compiler_failure_falls_back_to_eager_with_a_warning(workload, caplog):  # noqa: F811
    tok = make_tokenizer()
    model = make_model(len(tok), layers=2, seed=6)
    ref = reference_scores(model, tok, workload[:4])
    scorer = HFScorer(model, tok, max_length=512, fused=True)
    dec = scorer.fused
    assert dec is not None

    def broken(*args, **kwargs):
        raise RuntimeError("inductor: no working C compiler")

    dec.compile = True
    dec._k = fused_mod._Kernels(broken, broken, broken, broken)
    with caplog.at_level(logging.WARNING):
        got = scorer.score_batch([scorer.prepare(p, r) for p, r in workload[:4]])
    assert got == pytest.approx(ref, abs=1e-4)
    assert not dec.compile and "using eager kernels" in caplog.text


def test_out_of_memory_in_the_compiled_forward_is_not_a_compiler_failure(workload):  # noqa: F811
    """An OOM must reach the batching layer (which splits the batch), not switch to eager."""
    tok = make_tokenizer()
    scorer = HFScorer(make_model(len(tok), layers=2, seed=9), tok, max_length=512, fused=True)
    dec = scorer.fused
    assert dec is not None

    def oom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    dec.compile = True
    dec._k = fused_mod._Kernels(oom, oom, oom, oom)
    with pytest.raises(RuntimeError, match="out of memory"):
        scorer.score_batch([scorer.prepare(p, r) for p, r in workload[:3]])
    assert dec.compile  # still the compiled kernels


async def test_fused_reward_behind_the_batching_layer(workload):  # noqa: F811
    tok = make_tokenizer()
    model = make_model(len(tok), layers=2, seed=7)
    ref = reference_scores(model, tok, workload)
    reward = HFReward.from_model(model, tok, max_length=512, fused=True, max_wait_ms=20)
    assert isinstance(reward, BatchingReward)
    import asyncio

    got = await asyncio.gather(*(reward.ascore(p, [r]) for p, r in workload))
    assert [g[0] for g in got] == pytest.approx(ref, abs=1e-4)
    assert reward.stats.forward_passes < len(workload)
    assert reward.stats.padded_tokens == reward.stats.tokens  # padding-free


def test_config_fused_flag():
    from toa_graph.config import HFRewardConfig

    cfg = HFRewardConfig.model_validate({"kind": "hf", "model": "x", "fused": True})
    assert cfg.fused is True
    assert HFRewardConfig.model_validate({"kind": "hf", "model": "x"}).fused is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_fused_bf16_matches_one_at_a_time(workload):  # noqa: F811
    tok = make_tokenizer()
    model = make_model(len(tok), layers=4, seed=8).to("cuda", dtype=torch.bfloat16)
    plain = HFScorer(model, tok, max_length=512)
    items = [plain.prepare(p, r) for p, r in workload]
    one = [plain.score_batch([it])[0] for it in items]
    fast = HFScorer(model, tok, max_length=512, fused=True)
    assert fast.fused is not None and fast.fused.compile  # compiled on CUDA by default
    got = fast.score_batch(items)
    assert fast.fused.compile, "torch.compile fell back to eager on the GPU"
    scale = max(1.0, max(abs(x) for x in one))
    assert got == pytest.approx(one, abs=0.05 * scale)
