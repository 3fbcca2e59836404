"""``toa-graph serve-reward``: one batcher for every client, OpenRLHF's /get_reward, the
``remote`` reward kind, the verl and TRL adapters, bad input and failures."""

from __future__ import annotations

import asyncio
import importlib.util
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reward_server_fakes import fake_scores, reward_server, write_config
from toa_graph.reward_server import verl_reward_path
from toa_graph.reward_server.app import create_reward_app
from toa_graph.reward_server.serving import RewardServerSettings, RewardServing
from toa_graph.reward_server.template import PolicyTemplate, split_query
from toa_graph.rewards import build_reward
from toa_graph.rewards.base import CallableReward, RewardError

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_lm import tiny_model_and_tokenizer

    path = tmp_path_factory.mktemp("policy")
    tiny_model_and_tokenizer()[1].save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Iterator[str]:
    """One server process with the fake reward and the tiny model's chat template."""
    cfg = write_config(tmp_path_factory.mktemp("cfg"))
    with reward_server(cfg, "--policy-tokenizer", str(tiny_tokenizer_dir)) as url:
        yield url


def _metrics(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(url + "/metrics").json()
    return body


# ------------------------------------------------------------------ one batcher, many clients


def test_64_clients_one_item_each_are_scored_in_batches(server: str) -> None:
    before = _metrics(server)["batcher"]

    async def clients() -> list[float]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def one(i: int) -> float:
                item = {"prompt": f"p{i}", "response": "x" * i}
                r = await client.post(server + "/v1/score", json={"items": [item]})
                assert r.status_code == 200, r.text
                return float(r.json()["scores"][0])

            return list(await asyncio.gather(*(one(i) for i in range(64))))

    scores = asyncio.run(clients())
    assert scores == [fake_scores(f"p{i}", ["x" * i])[0] for i in range(64)]
    after = _metrics(server)["batcher"]
    items, batches = after["items"] - before["items"], after["batches"] - before["batches"]
    assert items == 64
    print("batch sizes:", after["batch_sizes"])
    assert items / batches >= 16, after["batch_sizes"]


# ------------------------------------------------------------------ OpenRLHF


def _openrlhf_body(tokenizer_dir: Path) -> tuple[dict[str, Any], list[tuple[Any, str, str]]]:
    """A request as OpenRLHF's remote-RM client builds it (query = templated prompt +
    response + EOS; prompts = templated prompt; labels), and what the reward must see."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    convs = [
        [{"role": "user", "content": "What is 2+2?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name: [x]"}],
    ]
    responses = ["It is 4.", "Bob [assistant] Smith"]
    labels = ["4", "Smith"]
    prompts = [
        tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs
    ]
    queries = [p + r + tok.eos_token for p, r in zip(prompts, responses, strict=True)]
    body = {"query": queries, "prompts": prompts, "labels": labels}
    return body, list(zip(convs, responses, labels, strict=True))


def test_get_reward_matches_in_process_reward(server: str, tiny_tokenizer_dir: Path) -> None:
    body, expected = _openrlhf_body(tiny_tokenizer_dir)
    r = httpx.post(server + "/get_reward", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    want = [fake_scores(conv, [resp], [label])[0] for conv, resp, label in expected]
    assert out["scores"] == out["rewards"] == want
    assert out["extra_logs"]["reward_failed"] == [0.0, 0.0]
    # without `prompts` (older clients) the query is cut at the template's generation prompt
    only_query = httpx.post(server + "/get_reward", json={"query": body["query"][:1],
                                                         "labels": body["labels"][:1]})  # fmt: skip
    assert only_query.json()["scores"] == want[:1]


def test_policy_template_recovers_the_conversation(tiny_tokenizer_dir: Path) -> None:
    template = PolicyTemplate.load(str(tiny_tokenizer_dir))
    body, expected = _openrlhf_body(tiny_tokenizer_dir)
    for query, prompt, (conv, response, _) in zip(
        body["query"], body["prompts"], expected, strict=True
    ):
        assert split_query(query, prompt, template) == (conv, response)
    # a prompt that is not the policy's template stays text; the response is still cut
    assert split_query("Q? A", "Q?", template) == ("Q?", " A")


# ------------------------------------------------------------------ verl


def _verl_module() -> Any:
    spec = importlib.util.spec_from_file_location("toa_verl_reward", verl_reward_path())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_verl_function_matches_in_process_reward(server: str) -> None:
    verl = _verl_module()
    prompt = [{"role": "user", "content": "2+2?"}]
    got = verl.compute_score("gsm8k", "so 4", "4", {"prompt": prompt}, url=server)
    assert got == fake_scores(prompt, ["so 4"], ["4"])[0]
    got_async = asyncio.run(verl.compute_score_async("gsm8k", "so 4", "4", {"question": "q"},
                                                     url=server))  # fmt: skip
    assert got_async == fake_scores("q", ["so 4"], ["4"])[0]
    assert (
        verl.compute_score("x", "no prompt", None, None, url=server)
        == fake_scores("", ["no prompt"])[0]
    )
    assert verl.compute_score("x", "FAIL", None, None, url=server, fallback=-1.0) == -1.0
    with pytest.raises(RuntimeError, match="could not score"):
        verl.compute_score("x", "FAIL", None, None, url=server)


# ------------------------------------------------------------------ remote kind and TRL


def test_remote_reward_kind_shares_the_server(server: str) -> None:
    from toa_graph.config import RewardAdapter
    from toa_graph.rewards.base import reward_counters
    from toa_graph.synthesis.summary import SynthesisSummary

    reward = build_reward(RewardAdapter.validate_python({"kind": "remote", "url": server}))
    reward = pickle.loads(pickle.dumps(reward))  # shipped to a Ray worker
    scores = asyncio.run(reward.ascore("p", ["a", "bb containing ref"], ["ref"]))
    assert scores == fake_scores("p", ["a", "bb containing ref"], ["ref"])
    with pytest.raises(RewardError, match="FAIL"):
        asyncio.run(reward.ascore("p", ["FAIL"]))
    summary = SynthesisSummary(method="toa", output_dir="x", config_digest="d")
    summary.reward_counters = reward_counters(reward)
    assert summary.reward_counters is not None
    assert summary.reward_counters["remote_items"] == 3
    assert summary.to_json()["reward_server_mean_batch_size"] >= 1


def test_trl_function_returns_none_for_failed_items(server: str) -> None:
    from toa_graph.reward_server.trl import ServerRewardFunction

    fn = pickle.loads(pickle.dumps(ServerRewardFunction(server, reference_column="answer")))
    prompts = [[{"role": "user", "content": "q"}], "plain"]
    completions = [[{"role": "assistant", "content": "ok 4"}], "FAIL"]
    out = asyncio.run(fn(prompts=prompts, completions=completions, answer=["4", None]))
    assert out == [fake_scores(prompts[0], ["ok 4"], ["4"])[0], None]
    assert fn.__name__ == "toa_reward_server"


# ------------------------------------------------------------------ bad input and failure


def _asgi(serving: RewardServing) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_reward_app(serving))
    return httpx.AsyncClient(transport=transport, base_url="http://rs")


def _serving(**settings: Any) -> RewardServing:
    serving = RewardServing(RewardServerSettings(**settings))
    serving.set_reward(CallableReward(fake_scores))
    return serving


def test_bad_requests_get_4xx_and_the_server_stays_up() -> None:
    serving = _serving(max_text_chars=50, fallback_score=-5.0)
    item = {"prompt": "p", "response": "r"}
    bad: list[tuple[Any, int, str]] = [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        ({"items": []}, 422, "items"),
        ({"items": [{"prompt": "p"}]}, 422, "items.0.response"),
        ({"items": [{**item, "response": "x" * 51}]}, 413, "51 characters"),
    ]
    openrlhf_bad: list[tuple[Any, int, str]] = [
        ({"query": []}, 422, "query"),
        ({"query": ["a", "b"], "prompts": ["a"]}, 422, "prompts"),
        ({"query": ["a"], "labels": ["1", "2"]}, 422, "labels"),
        ({"query": ["x" * 51]}, 413, "query[0]"),
    ]

    async def go() -> None:
        async with _asgi(serving) as c:
            for path, cases in (("/v1/score", bad), ("/get_reward", openrlhf_bad)):
                for body, status, words in cases:
                    kw: dict[str, Any] = (
                        {"content": body} if isinstance(body, bytes) else {"json": body}
                    )
                    r = await c.post(path, **kw)
                    assert r.status_code == status, (body, r.text)
                    assert words in r.json()["error"]
            ok = await c.post("/get_reward", json={"query": ["fine", "has FAIL"]})
            assert ok.status_code == 200
            assert ok.json()["scores"] == [fake_scores("", ["fine"])[0], -5.0]
            assert ok.json()["extra_logs"]["reward_failed"] == [0.0, 1.0]
            metrics = (await c.get("/metrics")).json()
            assert metrics["fallback_scores"] == 1
            assert metrics["batcher"]["failed_items"] == 1
            assert metrics["rejected"]["bad_request"] == len(bad) + len(openrlhf_bad)

    asyncio.run(go())


def test_health_503_while_loading_then_ok() -> None:
    serving = RewardServing(RewardServerSettings())

    async def go() -> None:
        async with _asgi(serving) as c:
            r = await c.get("/health")
            assert (r.status_code, r.json()["status"]) == (503, "loading")
            r = await c.post("/v1/score", json={"items": [{"prompt": "p", "response": "r"}]})
            assert r.status_code == 503 and "Retry-After" in r.headers
            serving.set_reward(CallableReward(fake_scores))
            assert (await c.get("/health")).status_code == 200

    asyncio.run(go())


def test_queue_full_gets_429_with_retry_after() -> None:
    release = asyncio.Event()

    async def slow(prompt: Any, responses: list[str]) -> list[float]:
        await release.wait()
        return [1.0] * len(responses)

    serving = RewardServing(RewardServerSettings(max_queue=2, max_wait_ms=0))
    serving.set_reward(CallableReward(slow))
    item = {"prompt": "p", "response": "r"}

    async def go() -> None:
        async with _asgi(serving) as c:
            first = asyncio.create_task(c.post("/v1/score", json={"items": [item, item]}))
            while serving.batcher is None or serving.batcher.pending < 2:
                await asyncio.sleep(0.01)
            r = await c.post("/v1/score", json={"items": [item]})
            assert r.status_code == 429 and r.headers["Retry-After"] == "1"
            release.set()
            assert (await first).json()["scores"] == [1.0, 1.0]
            assert (await c.get("/metrics")).json()["rejected"]["queue_full"] == 1

    asyncio.run(go())


def test_bearer_token() -> None:
    serving = _serving(api_key="s3cret")
    item = {"items": [{"prompt": "p", "response": "r"}]}

    async def go() -> None:
        async with _asgi(serving) as c:
            assert (await c.post("/v1/score", json=item)).status_code == 401
            wrong = {"Authorization": "Bearer nope"}
            assert (await c.post("/v1/score", json=item, headers=wrong)).status_code == 401
            good = {"Authorization": "Bearer s3cret"}
            assert (await c.post("/v1/score", json=item, headers=good)).status_code == 200
            assert (await c.get("/health")).status_code == 200  # probes need no token

    asyncio.run(go())


def test_cli_verl_path_and_missing_config(capsys: pytest.CaptureFixture[str]) -> None:
    from toa_graph.cli import main

    assert main(["serve-reward", "--verl-path"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == verl_reward_path() and "def compute_score" in path.read_text()
    assert main(["serve-reward"]) == 2
    assert "--config" in capsys.readouterr().err


def test_trl_grpo_trains_two_steps_against_serve_reward(tmp_path: Path) -> None:
    """TRL's GRPOTrainer with the tiny model, rewarded by a running serve-reward (math)."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from tests.tiny_lm import save_tiny_model
    from toa_graph.reward_server.trl import ServerRewardFunction

    model_dir = save_tiny_model(tmp_path / "tiny")
    cfg = tmp_path / "math.yaml"
    cfg.write_text("reward:\n  kind: math\n", encoding="utf-8")
    rows = [{"prompt": [{"role": "user", "content": f"{i}+1?"}], "answer": str(i + 1)}
            for i in range(4)]  # fmt: skip
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=2, num_generations=2,
        max_completion_length=8, max_steps=2, use_cpu=True, report_to=[], save_strategy="no",
        logging_steps=1, bf16=False,
    )  # fmt: skip
    with reward_server(cfg) as url:
        reward = ServerRewardFunction(url, reference_column="answer")
        trainer = GRPOTrainer(
            model=str(model_dir), reward_funcs=[reward], args=args,
            train_dataset=Dataset.from_list(rows),
        )  # fmt: skip
        trainer.train()
        scored = _metrics(url)["batcher"]["items"]
    assert trainer.state.global_step == 2
    assert scored == 2 * 2  # 2 steps x 2 completions (1 prompt x 2 generations), all served
    logged = [h for h in trainer.state.log_history if "rewards/toa_reward_server/mean" in h]
    assert len(logged) == 2


def test_a_lone_item_does_not_wait_the_whole_window() -> None:
    """``idle_ms``: with nobody else arriving, the batch goes after 1 ms, not 10 s."""
    from toa_graph.reward_server.batcher import ItemBatcher

    batcher = ItemBatcher(CallableReward(fake_scores), max_wait_ms=10_000, idle_ms=1)

    async def go() -> None:
        out = await asyncio.wait_for(batcher.score([("p", "abc", None)]), timeout=5)
        assert out[0].score == fake_scores("p", ["abc"])[0] and out[0].batch_size == 1

    asyncio.run(go())


def test_latency_benchmark_runs(tmp_path: Path) -> None:
    """benchmarks/reward_server_latency.py end to end on a tiny load (figures not checked)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "b.json"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "reward_server_latency.py"
    args = ("--clients", "4", "--requests", "3", "--warmup", "1", "--period-ms", "5")
    proc = subprocess.run([sys.executable, str(script), *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())["results"]
    for load in ("paced", "closed"):
        assert results[load]["server_mean_batch_size"] >= 1
        assert set(results[load]) >= {"in_process", "in_process_batcher", "http", "added_p50_ms"}
    assert "added by the server" in proc.stdout


def test_two_synthesis_runs_share_one_server(server: str, tmp_path: Path) -> None:
    """Two concurrent `synthesize` runs with `kind: remote` score through one server; each
    summary reports the server's mean batch size for its items."""
    from tests.fakes import fake_agents
    from toa_graph.config import RewardAdapter
    from toa_graph.synthesis import run_synthesis

    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(f'{{"id": "p{i}", "prompt": "q{i}"}}\n' for i in range(6)))
    before = _metrics(server)["batcher"]["items"]

    async def two_runs() -> list[Any]:
        def one(k: int) -> Any:
            reward = build_reward(RewardAdapter.validate_python({"kind": "remote", "url": server}))
            return run_synthesis(
                prompts, tmp_path / f"out{k}", method="toa", agents=fake_agents(),
                reward=reward, context={"budget": 4}, concurrency=6, progress=False,
            )  # fmt: skip

        return list(await asyncio.gather(one(0), one(1)))

    summaries = asyncio.run(two_runs())
    for s in summaries:
        assert (s.done, s.failed) == (6, 0)
        assert s.to_json()["reward_server_mean_batch_size"] >= 1
    sent = sum(s.reward_counters["remote_items"] for s in summaries)
    assert _metrics(server)["batcher"]["items"] - before == sent > 0


def test_get_reward_hf_model_sees_its_own_template(tiny_tokenizer_dir: Path) -> None:
    """An HF reward behind /get_reward scores the conversation recovered from the policy's
    template in the *reward model's* template: the same score as scoring (messages,
    response) directly with the model's own chat template, and not the raw query's."""
    pytest.importorskip("torch")
    from tests.test_rewards_hf import make_model, make_tokenizer, reference_scores
    from toa_graph.rewards.hf import HFReward

    rm_tok = make_tokenizer()
    rm = make_model(len(rm_tok))
    serving = RewardServing(template=PolicyTemplate.load(str(tiny_tokenizer_dir)))
    serving.set_reward(HFReward.from_model(rm, rm_tok, max_length=512))
    from transformers import AutoTokenizer

    policy = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    convs = [
        [{"role": "user", "content": "w3 w4 w5"}],
        [{"role": "system", "content": "w1 w2"}, {"role": "user", "content": "w9"}],
    ]
    responses = ["w6 w7", "w8 w10 w11"]
    prompts = [
        policy.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs
    ]
    queries = [p + r + policy.eos_token for p, r in zip(prompts, responses, strict=True)]

    async def go() -> list[float]:
        async with _asgi(serving) as c:
            r = await c.post("/get_reward", json={"query": queries, "prompts": prompts})
            assert r.status_code == 200, r.text
            return list(r.json()["scores"])

    got = asyncio.run(go())
    want = reference_scores(rm, rm_tok, list(zip(convs, responses, strict=True)))
    assert got == pytest.approx(want, abs=1e-4)
    raw = reference_scores(rm, rm_tok, [(q, "") for q in queries])  # the query as it came
    assert all(abs(g - w) > 1e-3 for g, w in zip(got, raw, strict=True))


def test_reward_config_from_a_reward_file_or_a_project_config(tmp_path: Path) -> None:
    from toa_graph.config import ConfigError
    from toa_graph.reward_server.serving import load_reward_config

    assert load_reward_config(write_config(tmp_path))[0].kind == "python"
    project = tmp_path / "project.yaml"
    project.write_text(
        "agents:\n  - {name: a, model: m, base_url: 'http://127.0.0.1:1/v1'}\n"
        "reward:\n  kind: math\n"
    )
    reward, agents = load_reward_config(project)
    assert reward.kind == "math" and [a.name for a in agents] == ["a"]
    remote = tmp_path / "remote.yaml"
    remote.write_text("reward:\n  kind: remote\n  url: http://127.0.0.1:1\n")
    with pytest.raises(ConfigError, match="not kind 'remote'"):
        load_reward_config(remote)
    bad = tmp_path / "bad.yaml"
    bad.write_text("reward:\n  kind: hf\n")
    with pytest.raises(ConfigError, match="model"):
        load_reward_config(bad)


def test_batcher_closing_fails_waiting_callers_and_survives_a_new_loop() -> None:
    from toa_graph.reward_server.batcher import ItemBatcher

    started = asyncio.Event()

    async def never(prompt: Any, responses: list[str]) -> list[float]:
        started.set()
        await asyncio.Event().wait()
        return []

    batcher = ItemBatcher(CallableReward(never), max_wait_ms=0)

    async def close_while_scoring() -> None:
        waiting = asyncio.create_task(batcher.score([("p", "r", None)]))
        await started.wait()
        await batcher.aclose()
        with pytest.raises(RuntimeError, match="scoring stopped"):
            await waiting

    asyncio.run(close_while_scoring())
    batcher.reward = CallableReward(fake_scores)  # the same batcher in another event loop
    out = asyncio.run(batcher.score([("p", "abc", None)]))
    assert out[0].score == fake_scores("p", ["abc"])[0]


def test_clients_retry_503_and_429_but_not_a_bad_request() -> None:
    from toa_graph.rewards.remote import post_items

    serving = RewardServing(RewardServerSettings())
    item = {"prompt": "p", "response": "abc"}

    async def go() -> None:
        async with _asgi(serving) as c:
            with pytest.raises(RewardError, match="503"):
                await post_items(c, "http://rs", [item], max_retries=0)
            loop = asyncio.get_running_loop()
            loop.call_later(0.2, serving.set_reward, CallableReward(fake_scores))
            body = await post_items(c, "http://rs", [item], max_retries=2)  # waits Retry-After
            assert body["scores"] == fake_scores("p", ["abc"])
            with pytest.raises(RewardError, match="422"):
                await post_items(c, "http://rs", [{"prompt": "p"}], max_retries=3)
            assert serving.rejected["bad_request"] == 1  # sent once, not retried

    asyncio.run(go())


@pytest.mark.slow
def test_ray_workers_share_one_serve_reward(server: str, tmp_path: Path) -> None:
    """`kind: remote` on the Ray path: each worker calls the server itself (no reward
    actor); the run summary sums the workers' counters and reports the mean batch size."""
    pytest.importorskip("ray")
    from tests.fake_servers import FakeServer
    from toa_graph.config import AgentConfig, RewardAdapter
    from toa_graph.distributed import run_distributed

    prompts = tmp_path / "in.jsonl"
    prompts.write_text("".join(f'{{"id": "p{i}", "prompt": "q{i}"}}\n' for i in range(8)))
    reward = RewardAdapter.validate_python({"kind": "remote", "url": server})
    before = _metrics(server)["batcher"]["items"]
    with FakeServer(delay=0.01) as fake:
        agents = [AgentConfig(name=n, model=f"{n}-m", base_url=fake.url) for n in ("a", "b")]
        run = run_distributed(
            prompts, tmp_path / "out", method="toa", agents=agents, reward=reward,
            context={"budget": 3}, workers=2, concurrency=4, progress=False, num_cpus=2,
        )  # fmt: skip
        summary = asyncio.run(run)
    assert (summary.done, summary.failed) == (8, 0)
    counters = summary.reward_counters
    assert counters is not None and counters["remote_items"] > 0
    assert _metrics(server)["batcher"]["items"] - before == counters["remote_items"]
    assert summary.to_json()["reward_server_mean_batch_size"] >= 1
