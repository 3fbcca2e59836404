"""vLLM pooling-runner client against a tiny local fake server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from toa_graph.rewards.base import RewardError, RewardModel
from toa_graph.rewards.vllm_pool import VLLMPoolingReward, score_from_response


class FakePooling:
    """``/classify`` and ``/pooling`` like vLLM's; raw logit = -(len of answer) / 10.

    The first ``fail_first`` requests get HTTP 503; a model named ``bad`` gets HTTP 400.
    """

    def __init__(self, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.bodies: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.bodies.append((self.path, body))
                    n = len(outer.bodies)
                if n <= outer.fail_first:
                    return self._send(503, {"error": "warming up"})
                if body.get("model") == "bad":
                    return self._send(400, {"error": "model not found"})
                answer = body["messages"][-1]["content"]
                logit = -len(answer) / 10
                if self.path == "/classify":
                    out = {
                        "data": [
                            {"index": 0, "label": "LABEL_0", "probs": [logit], "num_classes": 1}
                        ]
                    }
                else:  # per-token pooling output: the last token's value is the score
                    out = {"data": [{"index": 0, "data": [[0.0], [1.0], [logit]]}]}
                return self._send(200, out)

            def _send(self, code, obj):
                raw = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


async def test_classify_raw_logits_and_chat_messages():
    with FakePooling() as srv:
        reward = VLLMPoolingReward(srv.url + "/v1", "rm", backoff_s=0.01)
        assert isinstance(reward, RewardModel)
        msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        scores = await reward.ascore(msgs, ["hello there", "yo"])
        await reward.aclose()
    assert scores == pytest.approx([-1.1, -0.2])  # raw logits: negative, not squashed
    path, body = srv.bodies[0]
    assert path == "/classify"
    assert body["use_activation"] is False and body["model"] == "rm"
    assert body["messages"][:2] == msgs and body["messages"][2]["role"] == "assistant"


async def test_retry_on_503_then_success():
    with FakePooling(fail_first=2) as srv:
        reward = VLLMPoolingReward(srv.url, "rm", endpoint="pooling", backoff_s=0.01)
        scores = await reward.ascore("q", ["abcde"])
        await reward.aclose()
    assert scores == pytest.approx([-0.5])
    assert reward.retries == 2 and len(srv.bodies) == 3
    assert all(p == "/pooling" for p, _ in srv.bodies)


async def test_client_error_names_endpoint():
    with FakePooling() as srv:
        reward = VLLMPoolingReward(srv.url, "bad", backoff_s=0.01)
        with pytest.raises(RewardError, match=r"/classify: HTTP 400"):
            await reward.ascore("q", ["a"])
        await reward.aclose()
    assert len(srv.bodies) == 1  # no retry on 4xx


async def test_gives_up_after_retries_on_connection_errors():
    reward = VLLMPoolingReward(
        "http://127.0.0.1:9", "rm", max_retries=2, backoff_s=0.01, timeout_s=2
    )
    with pytest.raises(RewardError, match=r"127\.0\.0\.1:9/classify: failed after 3 attempts"):
        await reward.ascore("q", ["a"])
    await reward.aclose()


async def test_persistent_503_raises():
    with FakePooling(fail_first=100) as srv:
        reward = VLLMPoolingReward(srv.url, "rm", max_retries=1, backoff_s=0.01)
        with pytest.raises(RewardError, match="HTTP 503"):
            await reward.ascore("q", ["a"])
        await reward.aclose()


def test_score_from_response_shapes():
    assert score_from_response({"data": [{"probs": [0.5]}]}, "e") == 0.5
    assert score_from_response({"data": [{"data": 1.5}]}, "e") == 1.5
    assert score_from_response({"data": [{"data": [[1.0], [2.0]]}]}, "e") == 2.0
    with pytest.raises(RewardError, match="no data"):
        score_from_response({"error": "x"}, "e")


def test_from_config(monkeypatch):
    from toa_graph.config import VLLMRewardConfig

    cfg = VLLMRewardConfig(
        kind="vllm",
        model="rm",
        base_url="http://h:8000/v1",
        endpoint="pooling",
        api_key_env="TOA_TEST_RM_KEY",
    )
    with pytest.raises(RewardError, match="TOA_TEST_RM_KEY"):
        VLLMPoolingReward.from_config(cfg)
    monkeypatch.setenv("TOA_TEST_RM_KEY", "k")
    r = VLLMPoolingReward.from_config(cfg)
    assert r.url == "http://h:8000/pooling" and r.api_key == "k"


async def test_a_failing_score_request_is_sent_exactly_attempts_times_through_the_sampler():
    """One retry layer: a persistent 503 costs max_retries + 1 HTTP requests for the whole
    scoring step (the sampler does not retry the reward call on top), not 3 x 5 = 15."""
    from toa_graph.sampling import score_samples

    sample = {"id": 0, "text": "an answer", "error": None, "reward": None}
    with FakePooling(fail_first=10**6) as srv:
        reward = VLLMPoolingReward(srv.url, "rm", max_retries=4, backoff_s=0.001)
        [scored] = await score_samples(reward, "q", None, [sample])  # type: ignore[list-item]
        await reward.aclose()
    assert reward.retry.attempts == 5
    assert len(srv.bodies) == 5 and reward.requests == 5 and reward.retries == 4
    assert reward.counters() == {"reward_requests": 5, "reward_retries": 4}
    assert scored["reward"] is None
    assert "failed after 5 attempts" in scored["error"] and "HTTP 503" in scored["error"]
