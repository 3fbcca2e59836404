"""Reward model on the GPU: cross-run batching vs. one-at-a-time scoring.

A Llama-3.1-8B-shaped ``LlamaForSequenceClassification`` (hidden 4096, 32 layers, 32
heads, 8 KV heads, intermediate 14336, vocab 128256, bf16, ``num_labels=1``) is built from
its config with random weights (no download) and a word-level tokenizer with the same
vocabulary size (one word = one token, so lengths are exact). The workload is produced by
many concurrent TOA runs (``toa_graph.METHODS["toa"]``) with instant fake agents whose
answers make each scored conversation 150-1200 tokens long. Every (prompt, response) pair
the reward is asked for is recorded, then the same workload is scored one item per forward
pass, in the same process, and the two rates are compared.

    python benchmarks/reward_gpu.py                     # 8B shape on cuda:0
    python benchmarks/reward_gpu.py --model tiny --device cpu --runs 8 --budget 4  # smoke

Prints tokens/s (real tokens, padding excluded) for each phase and the speedup; with
``--json PATH`` also writes the figures there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from toa_graph.rewards import fused as fused_mod
from toa_graph.rewards.batching import BatchingReward
from toa_graph.rewards.hf import HFScorer

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|> "
    "{{ m['content'] }} <|eot_id|> {% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|> {% endif %}"
)
SPECIALS = [
    "<pad>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<unk>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "user",
    "assistant",
    "system",
]
OVERHEAD = 9  # template tokens around one user turn and one assistant turn


def make_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for i in range(vocab_size - len(SPECIALS)):
        vocab[f"t{i}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    )
    fast.chat_template = TEMPLATE
    return fast


SHAPES: dict[str, dict[str, Any]] = {
    "8b": dict(  # Llama-3.1-8B
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
        rope_theta=500000.0, rms_norm_eps=1e-5,
    ),
    "small": dict(  # big enough for CPU timings to mean something
        vocab_size=16384, hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=4096,
    ),
    "tiny": dict(
        vocab_size=4096, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
    ),
}  # fmt: skip


def make_model(kind: str, device: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(**SHAPES[kind], num_labels=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForSequenceClassification._from_config(cfg, dtype=dtype)
    return model.eval()


def words(rng: random.Random, n: int, vocab: int) -> str:
    return " ".join(f"t{rng.randrange(vocab - len(SPECIALS))}" for _ in range(n))


# ------------------------------------------------------------------ workload drivers


class Recorder:
    """A RewardModel that forwards to ``inner`` and records every scored pair."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.pairs: list[tuple[Any, str]] = []

    async def ascore(self, prompt: Any, responses: Any, references: Any = None) -> list[float]:
        self.pairs.extend((prompt, r) for r in responses)
        return await self.inner.ascore(prompt, responses, references)


def fake_agents(
    n_agents: int, prompt_len: int, rng: random.Random, args: argparse.Namespace
) -> dict:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class InstantAgent(BaseChatModel):
        """Answers at once with a text that makes the scored conversation 150-1200 tokens."""

        @property
        def _llm_type(self) -> str:
            return "instant"

        def _reply(self) -> ChatResult:
            total = rng.randint(args.min_len, args.max_len)
            n = max(5, total - prompt_len - OVERHEAD)
            text = words(rng, n, args.vocab)
            msg = AIMessage(
                text, usage_metadata={"input_tokens": 0, "output_tokens": n, "total_tokens": n}
            )
            return ChatResult(generations=[ChatGeneration(message=msg)])

        def _generate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            return self._reply()

        async def _agenerate(
            self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
        ) -> ChatResult:
            return self._reply()

    return {f"agent{i}": InstantAgent() for i in range(n_agents)}


async def drive_toa(reward: Any, args: argparse.Namespace, runs: int, seed: int) -> dict[str, Any]:
    from toa_graph import METHODS

    rng = random.Random(seed)
    graphs, prompts = [], []
    for _ in range(runs):
        plen = rng.randint(args.min_prompt, args.max_prompt)
        prompts.append(words(rng, plen, args.vocab))
        agents = fake_agents(args.agents, plen, random.Random(rng.random()), args)
        graphs.append(METHODS["toa"](agents=agents, reward=reward).compile())
    t0 = time.perf_counter()
    outs = await asyncio.gather(
        *(
            g.ainvoke(
                {"prompt": p}, context={"budget": args.budget}, config={"recursion_limit": 10_000}
            )
            for g, p in zip(graphs, prompts, strict=True)
        )
    )
    wall = time.perf_counter() - t0
    errors = sum(1 for o in outs for s in o["samples"] if s.get("error"))
    return {
        "wall_s": wall,
        "samples": sum(len(o["samples"]) for o in outs),
        "sample_errors": errors,
        "driver": "toa",
    }


async def drive_emulated(
    reward: Any, args: argparse.Namespace, runs: int, seed: int
) -> dict[str, Any]:
    """TOA's pattern without LangGraph: each run scores one response per play, in turn."""
    rng = random.Random(seed)

    async def run(i: int) -> int:
        r = random.Random(rng.random())
        plen = r.randint(args.min_prompt, args.max_prompt)
        prompt = words(r, plen, args.vocab)
        for _ in range(args.budget):
            n = max(5, r.randint(args.min_len, args.max_len) - plen - OVERHEAD)
            await asyncio.sleep(0)  # a graph step
            await reward.ascore(prompt, [words(r, n, args.vocab)])
        return args.budget

    t0 = time.perf_counter()
    done = await asyncio.gather(*(run(i) for i in range(runs)))
    return {
        "wall_s": time.perf_counter() - t0,
        "samples": sum(done),
        "sample_errors": 0,
        "driver": "emulated (no langgraph)",
    }


def toa_available() -> bool:
    try:
        import langchain_core  # noqa: F401

        from toa_graph import METHODS
    except Exception as exc:  # pragma: no cover
        print(f"TOA graph not importable ({exc}); emulating TOA's call pattern", flush=True)
        return False
    return "toa" in METHODS


# ------------------------------------------------------------------ phases


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def one_at_a_time(scorer: HFScorer, pairs: list[tuple[Any, str]], device: str) -> dict[str, Any]:
    items = [scorer.prepare(p, r) for p, r in pairs]
    sync(device)
    t0 = time.perf_counter()
    scores = [scorer.score_batch([it])[0] for it in items]
    wall = time.perf_counter() - t0
    tokens = sum(it.n_tokens for it in items)
    return {
        "wall_s": wall,
        "tokens": tokens,
        "items": len(items),
        "tokens_per_s": tokens / wall,
        "scores": scores,
    }


def batched_phase(
    scorer: HFScorer, args: argparse.Namespace, runs: int, seed: int, use_toa: bool
) -> tuple[dict[str, Any], Recorder]:
    reward = BatchingReward(
        scorer,
        batch_tokens=args.batch_tokens,
        max_batch_size=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    rec = Recorder(reward)
    driver = drive_toa if use_toa else drive_emulated
    res = asyncio.run(driver(rec, args, runs, seed))
    st = reward.stats
    res.update(
        runs=runs,
        tokens=st.tokens,
        items=st.items,
        forward_passes=st.forward_passes,
        padded_tokens=st.padded_tokens,
        oom_splits=st.oom_splits,
        forward_s=st.forward_s,
        tokens_per_s=st.tokens / res["wall_s"],
        gpu_busy_tokens_per_s=st.tokens / max(st.forward_s, 1e-9),
        mean_batch=st.items / max(st.forward_passes, 1),
        max_batch=st.max_batch,
        padding_waste=1 - st.tokens / max(st.padded_tokens, 1),
    )
    return res, rec


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", choices=sorted(SHAPES), default="8b")
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--runs", default="64,128", help="concurrent TOA runs; comma list for several")
    ap.add_argument(
        "--padded-runs", default=None, help="runs for the padded phases (default: --runs)"
    )
    ap.add_argument("--budget", type=int, default=16, help="generations (reward calls) per TOA run")
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--min-len", type=int, default=150)
    ap.add_argument("--max-len", type=int, default=1200)
    ap.add_argument("--min-prompt", type=int, default=30)
    ap.add_argument("--max-prompt", type=int, default=140)
    ap.add_argument("--batch-tokens", type=int, default=65536)
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--packing", choices=["off", "on", "both"], default="both")
    ap.add_argument(
        "--fused",
        choices=["off", "on"],
        default="on",
        help="also measure the fused forward (toa_graph.rewards.fused), after the packed one",
    )
    ap.add_argument("--no-compile", action="store_true", help="fused forward without torch.compile")
    ap.add_argument(
        "--one-at-a-time-items",
        type=int,
        default=0,
        help="score only this many items one at a time (0 = the whole workload)",
    )
    ap.add_argument("--emulate", action="store_true", help="don't use the TOA graph")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch
    import transformers

    run_list = [int(x) for x in args.runs.split(",")]
    use_toa = (not args.emulate) and toa_available()
    t_build = time.perf_counter()
    model = make_model(args.model, args.device)
    args.vocab = model.config.vocab_size
    tok = make_tokenizer(args.vocab)
    scorer = HFScorer(model, tok, max_length=4096, name=f"llama-{args.model}-seqcls")
    print(f"built model + tokenizer in {time.perf_counter() - t_build:.1f}s", flush=True)
    device_name = (
        torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor()
    )
    report: dict[str, Any] = {
        "device": device_name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": args.model,
        "params_b": sum(p.numel() for p in model.parameters()) / 1e9,
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "driver": "toa" if use_toa else "emulated",
    }

    # Warm-up (kernels, allocator) on a few shapes.
    rng = random.Random(1)
    warm = [
        (words(rng, 50, args.vocab), words(rng, rng.randint(100, 1100), args.vocab))
        for _ in range(48)
    ]
    scorer.score_batch([scorer.prepare(p, r) for p, r in warm[:1]])
    BatchingReward(
        scorer, batch_tokens=args.batch_tokens, max_batch_size=args.max_batch
    ).score_pairs_sync(warm)
    sync(args.device)

    results: dict[str, Any] = {}
    recorded: list[tuple[Any, str]] = []
    batched_scores: dict[int, float] = {}
    padded_runs = [int(x) for x in args.padded_runs.split(",")] if args.padded_runs else run_list
    for runs in padded_runs:
        res, rec = batched_phase(scorer, args, runs, seed=runs, use_toa=use_toa)
        results[f"batched_runs{runs}"] = res
        print(
            f"[batched, {runs} concurrent {res['driver']} runs] {res['tokens']:,} tokens in "
            f"{res['wall_s']:.2f}s = {res['tokens_per_s']:,.0f} tok/s; {res['forward_passes']} forwards, "
            f"mean batch {res['mean_batch']:.1f}, padding {res['padding_waste']:.1%}, "
            f"GPU-busy rate {res['gpu_busy_tokens_per_s']:,.0f} tok/s",
            flush=True,
        )
        if not recorded:
            recorded = rec.pairs

    # One at a time: the workload of the first batched phase, same process, same model.
    pairs = recorded[: args.one_at_a_time_items] if args.one_at_a_time_items else recorded
    one = one_at_a_time(scorer, pairs, args.device)
    print(
        f"[one at a time] {one['tokens']:,} tokens ({one['items']} items) in {one['wall_s']:.2f}s = "
        f"{one['tokens_per_s']:,.0f} tok/s",
        flush=True,
    )
    # Agreement: the same pairs scored in length-sorted padded batches.
    batched = BatchingReward(scorer, batch_tokens=args.batch_tokens, max_batch_size=args.max_batch)
    sync(args.device)
    t0 = time.perf_counter()
    bscores = batched.score_pairs_sync(pairs)
    sync(args.device)
    offline_wall = time.perf_counter() - t0
    diffs = [abs(a - b) for a, b in zip(one["scores"], bscores, strict=True)]
    scale = max(abs(x) for x in one["scores"]) or 1.0
    mean = sum(one["scores"]) / len(one["scores"])
    spread = (sum((x - mean) ** 2 for x in one["scores"]) / len(one["scores"])) ** 0.5
    results["one_at_a_time"] = {k: v for k, v in one.items() if k != "scores"}
    results["offline_batched_same_pairs"] = {
        "wall_s": offline_wall,
        "tokens_per_s": one["tokens"] / offline_wall,
        "forward_passes": batched.stats.forward_passes,
        "max_abs_diff_vs_one_at_a_time": max(diffs),
        "score_scale": scale,
        "mean_abs_diff_vs_one_at_a_time": sum(diffs) / len(diffs),
        "score_std": spread,
    }
    print(
        f"[offline batched, same pairs] {one['tokens'] / offline_wall:,.0f} tok/s; "
        f"|batched - one-at-a-time| max {max(diffs):.4g}, mean {sum(diffs) / len(diffs):.4g} "
        f"(scores: std {spread:.3g}, max |s| {scale:.3g})",
        flush=True,
    )
    del batched_scores

    variants: list[tuple[str, dict[str, Any]]] = []
    if args.packing in ("on", "both"):
        if args.packing == "on":
            results = {k: v for k, v in results.items() if not k.startswith("batched_runs")}
        variants.append(("packed", {"packing": True}))
    if args.fused == "on":
        variants.append(("fused", {"fused": True}))
    for label, kw in variants:
        try:
            vscorer = HFScorer(
                model, tok, max_length=4096, name=f"llama-{args.model}-{label}", **kw
            )
            if vscorer.fused is not None and args.no_compile:
                vscorer.fused.compile = False
                vscorer.fused._k = fused_mod._EAGER
            t0 = time.perf_counter()
            vscorer.score_batch([vscorer.prepare(p, r) for p, r in warm[:8]])
            vscorer.score_batch([vscorer.prepare(p, r) for p, r in warm[8:9]])
            sync(args.device)
            warm_s = time.perf_counter() - t0
            vk = BatchingReward(
                vscorer, batch_tokens=args.batch_tokens, max_batch_size=args.max_batch
            )
            t0 = time.perf_counter()
            vscores = vk.score_pairs_sync(pairs)
            sync(args.device)
            vw = time.perf_counter() - t0
            vdiffs = [abs(a - b) for a, b in zip(one["scores"], vscores, strict=True)]
            vdiff, vmean = max(vdiffs), sum(vdiffs) / len(vdiffs)
            # the same pairs one at a time through this path (only the kernels differ)
            vone = one_at_a_time(vscorer, pairs, args.device)
            sdiff = max(abs(a - b) for a, b in zip(one["scores"], vone["scores"], strict=True))
            results[f"one_at_a_time_{label}"] = {k: v for k, v in vone.items() if k != "scores"}
            results[f"offline_{label}_same_pairs"] = {
                "wall_s": vw,
                "tokens_per_s": one["tokens"] / vw,
                "forward_passes": vk.stats.forward_passes,
                "warmup_s": warm_s,
                "compiled": bool(vscorer.fused is not None and vscorer.fused.compile),
                "max_abs_diff_vs_one_at_a_time": vdiff,
                "mean_abs_diff_vs_one_at_a_time": vmean,
                "max_abs_diff_single_item_vs_transformers": sdiff,
            }
            print(
                f"[{label}: warm-up {warm_s:.1f}s] one at a time {vone['tokens_per_s']:,.0f} tok/s; "
                f"offline same pairs {one['tokens'] / vw:,.0f} tok/s; |{label} - one-at-a-time| "
                f"max {vdiff:.4g}, mean {vmean:.4g}; single items vs transformers max {sdiff:.4g}",
                flush=True,
            )
            for runs in run_list:
                res, _ = batched_phase(vscorer, args, runs, seed=runs, use_toa=use_toa)
                results[f"{label}_runs{runs}"] = res
                print(
                    f"[{label}, {runs} concurrent {res['driver']} runs] {res['tokens']:,} tokens in "
                    f"{res['wall_s']:.2f}s = {res['tokens_per_s']:,.0f} tok/s; "
                    f"{res['forward_passes']} forwards, mean batch {res['mean_batch']:.1f}",
                    flush=True,
                )
        except Exception as exc:
            results[f"{label}_error"] = repr(exc)
            print(f"[{label}] failed: {exc!r}", flush=True)

    base = results["one_at_a_time"]["tokens_per_s"]
    print(
        "\nsummary (real tokens/s; ratio vs one-at-a-time through transformers, the reference "
        "code's way; [ratio vs one-at-a-time through the same kernels])"
    )
    for k, v in results.items():
        if isinstance(v, dict) and "tokens_per_s" in v:
            v["ratio_vs_one_at_a_time"] = v["tokens_per_s"] / base
            line = (
                f"  {k:34s} {v['tokens_per_s']:>10,.0f} tok/s  x{v['ratio_vs_one_at_a_time']:.2f}"
            )
            same = next(
                (
                    results[f"one_at_a_time_{lb}"]
                    for lb in ("fused", "packed")
                    if k.startswith(f"{lb}_") or f"_{lb}_" in k
                ),
                None,
            )
            if same is not None and not k.startswith("one_at_a_time"):
                v["ratio_vs_same_kernels_one_at_a_time"] = v["tokens_per_s"] / same["tokens_per_s"]
                line += f"  [x{v['ratio_vs_same_kernels_one_at_a_time']:.2f}]"
            print(line)
    report["results"] = results
    out = args.json or (
        os.path.join(os.environ["OUT"], "reward_gpu.json") if os.environ.get("OUT") else None
    )
    if out:
        Path(out).write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
