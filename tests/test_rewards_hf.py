"""HF sequence-classification reward + batching layer, on a tiny random-weight Llama.

Everything is built inside the tests (no downloads): a word-level tokenizer with a chat
template and a 2-layer LlamaForSequenceClassification with ``num_labels=1``.
"""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from toa_graph.rewards.base import RewardError, RewardModel  # noqa: E402
from toa_graph.rewards.batching import BatchingReward, is_oom_error, pack_batches  # noqa: E402
from toa_graph.rewards.hf import HFReward, HFScorer  # noqa: E402

N_WORDS = 300
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [
        "<pad>",
        "<s>",
        "</s>",
        "<unk>",
        "<|user|>",
        "<|assistant|>",
        "<|system|>",
        "<|end|>",
    ]
    vocab = {t: i for i, t in enumerate(specials)}
    for i in range(N_WORDS):
        vocab[f"w{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=specials[4:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(vocab_size: int, *, seed: int = 0, layers: int = 2):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        num_labels=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForSequenceClassification(cfg).float().eval()
    # Random init keeps the score head near zero; make scores spread out.
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)
    return model


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(N_WORDS)}" for _ in range(n))


@pytest.fixture(scope="module")
def tiny():
    tok = make_tokenizer()
    model = make_model(len(tok))
    return model, tok


@pytest.fixture(scope="module")
def workload():
    rng = random.Random(7)
    pairs = []
    for _ in range(24):
        prompt = words(rng, rng.randint(3, 40))
        pairs.append((prompt, words(rng, rng.randint(1, 60))))
    # one chat-messages prompt
    pairs.append(
        ([{"role": "system", "content": "w1 w2"}, {"role": "user", "content": "w3 w4 w5"}], "w6 w7")
    )
    return pairs


def reference_scores(model, tok, pairs):
    """One conversation per forward, straight through the model's own head."""
    out = []
    with torch.no_grad():
        for prompt, resp in pairs:
            msgs = (
                [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            )
            text = tok.apply_chat_template(
                [*msgs, {"role": "assistant", "content": resp}], tokenize=False
            )
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            out.append(float(model(input_ids=ids).logits[0, 0]))
    return out


def test_chat_template_and_tokens(tiny):
    model, tok = tiny
    scorer = HFScorer(model, tok, max_length=512)
    enc = scorer.prepare("w1 w2", "w3")
    assert enc.ids[0] == tok.bos_token_id
    assert tok.decode(enc.ids) == "<s> <|user|> w1 w2 <|end|> <|assistant|> w3 <|end|>"


def test_batched_equals_one_at_a_time(tiny, workload):
    model, tok = tiny
    scorer = HFScorer(model, tok, max_length=512)
    ref = reference_scores(model, tok, workload)
    one = [scorer.score_batch([scorer.prepare(p, r)])[0] for p, r in workload]
    batched = scorer.score_batch([scorer.prepare(p, r) for p, r in workload])
    assert one == pytest.approx(ref, abs=1e-4)
    assert batched == pytest.approx(ref, abs=1e-4)
    assert len(set(round(s, 3) for s in ref)) > 5  # the scores actually differ


def test_packed_equals_padded(workload):
    tok = make_tokenizer()
    model = make_model(len(tok), seed=1)
    padded = HFScorer(model, tok, max_length=512)
    items = [padded.prepare(p, r) for p, r in workload]
    expect = padded.score_batch(items)
    model2 = make_model(len(tok), seed=1)
    packed = HFScorer(model2, tok, max_length=512, packing=True)
    assert not packed.padded
    got = packed.score_batch(items)
    assert got == pytest.approx(expect, abs=1e-4)


async def test_reward_model_protocol_and_batching(tiny, workload):
    model, tok = tiny
    reward = HFReward.from_model(model, tok, max_length=512, max_wait_ms=20, batch_tokens=4096)
    assert isinstance(reward, RewardModel)
    ref = reference_scores(model, tok, workload)
    results = await asyncio.gather(*(reward.ascore(p, [r]) for p, r in workload))
    assert [r[0] for r in results] == pytest.approx(ref, abs=1e-4)
    assert reward.stats.forward_passes < len(workload)
    assert reward.stats.items == len(workload)
    # several responses in one call keep their order
    p = workload[0][0]
    resps = [r for _, r in workload[:5]]
    got = await reward.ascore(p, resps)
    assert got == pytest.approx(reference_scores(model, tok, [(p, r) for r in resps]), abs=1e-4)
    assert await reward.ascore(p, []) == []


async def test_64_concurrent_callers_few_forwards(tiny):
    model, tok = tiny
    reward = HFReward.from_model(model, tok, max_length=512, max_wait_ms=10, max_batch_size=64)
    rng = random.Random(3)
    pairs = [(words(rng, rng.randint(5, 30)), words(rng, rng.randint(5, 30))) for _ in range(64)]

    async def caller(i: int) -> float:
        await asyncio.sleep(rng.random() * 0.002)  # arrive at slightly different times
        return (await reward.ascore(pairs[i][0], [pairs[i][1]]))[0]

    scores = await asyncio.gather(*(caller(i) for i in range(64)))
    assert reward.stats.calls == 64
    assert reward.stats.items == 64
    assert reward.stats.forward_passes <= 8, reward.stats
    assert scores == pytest.approx(reference_scores(model, tok, pairs), abs=1e-4)


def test_truncation_keeps_response_end_and_warns(tiny, caplog):
    model, tok = tiny
    scorer = HFScorer(model, tok, max_length=32)
    prompt = " ".join(f"w{i}" for i in range(100))
    response = " ".join(f"w{i}" for i in range(200, 210))
    with caplog.at_level(logging.WARNING, logger="toa_graph.rewards.hf"):
        enc = scorer.prepare(prompt, response)
    assert enc.n_tokens == 32
    assert enc.truncated > 0
    assert enc.ids[0] == tok.bos_token_id
    text = tok.decode(enc.ids)
    assert text.endswith("<|assistant|> " + response + " <|end|>")
    assert "w0 " not in text and "w99" in text  # the oldest context went first
    assert any("exceeds max_length" in r.message for r in caplog.records)
    assert scorer.truncations == 1
    # a response longer than the limit keeps its end
    long_resp = " ".join(f"w{i % N_WORDS}" for i in range(100))
    enc2 = scorer.prepare("w1", long_resp)
    assert enc2.n_tokens == 32 and tok.decode(enc2.ids).endswith("w99 <|end|>")
    # scored, not dropped
    assert len(scorer.score_batch([enc, enc2])) == 2


class FlakyScorer:
    """Wraps a scorer; any batch larger than ``fit`` raises a CUDA-style OOM."""

    def __init__(self, inner, fit: int, oom_cls: type[BaseException] = RuntimeError) -> None:
        self.inner = inner
        self.fit = fit
        self.name = "flaky"
        self.padded = True
        self.oom_cls = oom_cls
        self.sizes: list[int] = []

    def prepare(self, prompt, response, reference=None):
        return self.inner.prepare(prompt, response, reference)

    def score_batch(self, items):
        self.sizes.append(len(items))
        if len(items) > self.fit:
            raise self.oom_cls("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.score_batch(items)


async def test_oom_splits_batch_in_halves(tiny, workload):
    model, tok = tiny
    flaky = FlakyScorer(HFScorer(model, tok, max_length=512), fit=4)
    reward = BatchingReward(flaky, max_wait_ms=20, batch_tokens=1 << 20)
    ref = reference_scores(model, tok, workload)
    results = await asyncio.gather(*(reward.ascore(p, [r]) for p, r in workload))
    assert [r[0] for r in results] == pytest.approx(ref, abs=1e-4)
    assert reward.stats.oom_splits > 0
    assert max(s for s in flaky.sizes if s <= 4) <= 4
    assert flaky.sizes[0] == len(workload)


async def test_single_item_oom_fails_only_its_caller(tiny):
    model, tok = tiny
    inner = HFScorer(model, tok, max_length=512)

    class OutOfMemoryError(RuntimeError):  # named like torch.cuda.OutOfMemoryError
        pass

    class LongOOM(FlakyScorer):
        def score_batch(self, items):
            self.sizes.append(len(items))
            if any(it.n_tokens > 50 for it in items):
                raise OutOfMemoryError("Tried to allocate")
            return self.inner.score_batch(items)

    scorer = LongOOM(inner, fit=100)
    reward = BatchingReward(scorer, max_wait_ms=20)
    rng = random.Random(5)
    long = ("w1", words(rng, 80))
    shorts = [("w2", words(rng, 5)) for _ in range(7)]
    results = await asyncio.gather(
        reward.ascore(long[0], [long[1]]),
        *(reward.ascore(s[0], [s[1]]) for s in shorts),
        return_exceptions=True,
    )
    assert isinstance(results[0], RewardError) and "out of memory" in str(results[0])
    assert all(isinstance(r, list) and len(r) == 1 for r in results[1:])
    assert reward.stats.failed_items == 1


async def test_other_errors_reach_callers_as_reward_error():
    class Broken:
        name = "broken"

        def prepare(self, prompt, response, reference=None):
            class It:
                n_tokens = len(response)

            return It()

        def score_batch(self, items):
            raise ValueError("bad weights")

    reward = BatchingReward(Broken(), max_wait_ms=1)
    with pytest.raises(RewardError, match="bad weights"):
        await reward.ascore("p", ["a", "b"])


def test_is_oom_error():
    assert is_oom_error(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert not is_oom_error(RuntimeError("shape mismatch"))
    assert not is_oom_error(ValueError("out of memory"))


def test_pack_batches_budget():
    lengths = [100, 900, 300, 1200, 150, 600, 700, 800]
    groups = pack_batches(lengths, batch_tokens=2400, max_batch_size=3)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        assert len(g) <= 3
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= 2400
    assert pack_batches([5000], batch_tokens=100, max_batch_size=4) == [[0]]


def test_sync_scoring_paths(tiny, workload):
    model, tok = tiny
    reward = HFReward.from_model(model, tok, max_length=512, batch_tokens=512)
    pairs = workload[:8]
    a = reward.score_pairs_sync(pairs)
    b = reward.score_pairs_sync(pairs, one_at_a_time=True)
    assert a == pytest.approx(b, abs=1e-4)


def test_trust_remote_code_is_off_by_default():
    from toa_graph.config import HFRewardConfig

    cfg = HFRewardConfig(kind="hf", model="RLHFlow/ArmoRM-Llama3-8B-v0.1")
    assert cfg.trust_remote_code is False


def test_cuda_device_without_cuda_is_an_error():
    from toa_graph.rewards.hf import resolve_device_dtype

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(RewardError, match="CUDA is not available"):
        resolve_device_dtype("cuda:0")
    dev, dt = resolve_device_dtype("auto")
    assert dev.type == "cpu" and dt == torch.float32


def test_armorm_style_score_output(tiny, workload):
    """A custom model whose output carries ``.score`` (ArmoRM) is read through that field."""
    model, tok = tiny

    class Out:
        def __init__(self, score):
            self.score = score

    class ArmoLike(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def forward(self, input_ids, **kw):
            return Out(self.inner(input_ids=input_ids).logits * 2.0)

    scorer = HFScorer(ArmoLike(model), tok, max_length=512)
    assert scorer._head == "custom"
    items = [scorer.prepare(p, r) for p, r in workload[:6]]
    got = [scorer.score_batch([it])[0] for it in items]
    ref = reference_scores(model, tok, workload[:6])
    assert got == pytest.approx([2 * x for x in ref], abs=1e-4)
    assert scorer.score_batch(items) == pytest.approx(got, abs=1e-4)


# ------------------------------------------------------------------ GPU


gpu = pytest.mark.gpu


def _cuda() -> bool:
    return bool(torch.cuda.is_available())


@gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_bf16_batched_matches_one_at_a_time(workload):
    tok = make_tokenizer()
    model = make_model(len(tok), layers=4).to("cuda", dtype=torch.bfloat16)
    scorer = HFScorer(model, tok, max_length=512)
    items = [scorer.prepare(p, r) for p, r in workload]
    one = [scorer.score_batch([it])[0] for it in items]
    batched = scorer.score_batch(items)
    scale = max(1.0, max(abs(x) for x in one))
    assert batched == pytest.approx(one, abs=0.05 * scale)


@gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_packed_matches_padded(workload):
    tok = make_tokenizer()
    model = make_model(len(tok), layers=4, seed=2).to("cuda", dtype=torch.bfloat16)
    padded = HFScorer(model, tok, max_length=512)
    items = [padded.prepare(p, r) for p, r in workload]
    expect = padded.score_batch(items)
    model2 = make_model(len(tok), layers=4, seed=2).to("cuda", dtype=torch.bfloat16)
    packed = HFScorer(model2, tok, max_length=512, packing=True)
    got = packed.score_batch(items)
    scale = max(1.0, max(abs(x) for x in expect))
    assert got == pytest.approx(expect, abs=0.05 * scale)


@gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_real_oom_is_split():
    """A batch too big for the card is split (real torch.cuda.OutOfMemoryError)."""
    tok = make_tokenizer()
    model = make_model(len(tok)).to("cuda", dtype=torch.bfloat16)
    scorer = HFScorer(model, tok, max_length=4096)
    free, _ = torch.cuda.mem_get_info()

    class Hog:
        name = "hog"
        padded = True

        def prepare(self, prompt, response, reference=None):
            return scorer.prepare(prompt, response, reference)

        def score_batch(self, items):
            # Needs ~0.6 x free memory per item: 2 items never fit, 1 does.
            per = int(free * 0.6) // 2
            _blocks = [torch.empty(per, dtype=torch.bfloat16, device="cuda") for _ in items]
            return scorer.score_batch(items)

    reward = BatchingReward(Hog(), max_wait_ms=20)

    async def main():
        return await asyncio.gather(*(reward.ascore("w1 w2", [f"w{i}"]) for i in range(4)))

    out = asyncio.run(main())
    assert len(out) == 4 and reward.stats.oom_splits >= 1


@gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_varlen_attention_is_causal_per_sequence():
    """The fused varlen kernel equals causal SDPA run on each sequence alone (GQA too)."""
    import torch.nn.functional as F

    from toa_graph.rewards.varlen import _varlen_attention, _varlen_kernel

    if _varlen_kernel() is None:
        pytest.skip("torch.nn.attention.varlen not available")
    torch.manual_seed(0)
    lengths = [5, 130, 1, 77, 260]
    total, hq, hkv, d = sum(lengths), 8, 2, 64
    q = torch.randn(1, hq, total, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, total, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, hkv, total, d, device="cuda", dtype=torch.bfloat16)
    cu = torch.tensor(
        [0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda"
    )
    out, _ = _varlen_attention(
        None, q, k, v, None, scaling=d**-0.5, cu_seq_lens_q=cu, max_length_q=max(lengths)
    )
    assert out.shape == (1, total, hq, d)
    start = 0
    for n in lengths:
        qs = q[:, :, start : start + n]
        ks = k[:, :, start : start + n].repeat_interleave(hq // hkv, dim=1)
        vs = v[:, :, start : start + n].repeat_interleave(hq // hkv, dim=1)
        ref = F.scaled_dot_product_attention(qs.float(), ks.float(), vs.float(), is_causal=True)
        got = out[0, start : start + n].transpose(0, 1).float()
        assert torch.allclose(got, ref[0], atol=2e-2), (n, (got - ref[0]).abs().max())
        start += n
