"""The server's limits and errors: the OpenAI error object for bad requests, the API key, the queue limit
(429), a disconnecting client freeing its slot, and SIGTERM under load. Every wait here is bounded and
waits for a condition; nothing asserts on a duration."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

import rwkv_ggml
from tests.conftest import tiny_path
from tests.server.conftest import ServerProcess, running_server

KEY = "test-key"
WAIT_S = 60.0  # bound on waiting for a condition


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A tiny RWKV-7 model, one slot, one waiting place, a key, low caps."""
    with running_server(
        tmp_path_factory.mktemp("strict"),
        "-m",
        str(tiny_path("tiny-rwkv-7v0-834K-FP32.bin")),
        "--model-name",
        "tiny",
        "--api-key",
        KEY,
        "--max-batch",
        "1",
        "--max-queue",
        "1",
        "--max-tokens-cap",
        "100000",
        "--max-prompt-tokens",
        "64",
    ) as s:
        yield s


def _post(server: ServerProcess, path: str, body: Any, key: str | None = KEY, **kw: Any) -> httpx.Response:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=30, **kw)


def _assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"] and "Traceback" not in error["message"]
    assert error["code"] is None or isinstance(error["code"], str)
    if param is not None:
        assert error["param"] == param and param.split(".")[0] in error["message"]
    return error  # type: ignore[no-any-return]


GOOD = {"model": "tiny", "prompt": "Hello", "max_tokens": 4}


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/completions", {**GOOD, "temperatur": 0.5}, 400, "temperatur"),
        ("/v1/completions", {**GOOD, "temperature": -1}, 400, "temperature"),
        ("/v1/completions", {**GOOD, "top_p": 2}, 400, "top_p"),
        ("/v1/completions", {**GOOD, "max_tokens": "many"}, 400, "max_tokens"),
        ("/v1/completions", {**GOOD, "max_tokens": 100001}, 400, "max_tokens"),
        ("/v1/completions", {**GOOD, "n": 2}, 400, "n"),
        ("/v1/completions", {**GOOD, "prompt": ""}, 400, "prompt"),
        ("/v1/completions", {**GOOD, "prompt": "x" * 200}, 400, "prompt"),
        ("/v1/completions", {**GOOD, "prompt": [1, 2, 10**9]}, 400, "prompt"),
        ("/v1/completions", {**GOOD, "stop": [""]}, 400, "stop"),
        ("/v1/completions", {**GOOD, "logit_bias": {"x": 1}}, 400, "logit_bias"),
        ("/v1/completions", {"model": "tiny"}, 400, "prompt"),
        ("/v1/completions", {**GOOD, "model": "gpt-4"}, 404, "model"),
        ("/v1/completions", {**GOOD, "response_format": {"type": "json_object"}}, 400, "response_format"),
        ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]},
            400,
            None,
        ),
        (
            "/v1/chat/completions",
            {"model": "tiny", "messages": [{"role": "user", "content": " "}]},
            400,
            None,
        ),
        ("/v1/embeddings", {"model": "tiny", "input": "x", "dimensions": 3}, 400, "dimensions"),
        ("/v1/embeddings", {"model": "tiny", "input": []}, 400, "input"),
    ],
)
def test_bad_requests_get_the_openai_error_object(
    strict: ServerProcess, path: str, body: dict[str, Any], status: int, param: str | None
) -> None:
    _assert_error(_post(strict, path, body), status, param)


def test_bad_json_unknown_route_and_method(strict: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bad = httpx.post(f"{strict.url}/v1/completions", content=b"{not json", headers=headers, timeout=30)
    _assert_error(bad, 400)
    _assert_error(httpx.get(f"{strict.url}/v1/nothing", timeout=30), 404)
    _assert_error(httpx.get(f"{strict.url}/v1/completions", headers=headers, timeout=30), 405)


def test_the_api_key_is_required(strict: ServerProcess) -> None:
    assert _assert_error(_post(strict, "/v1/completions", GOOD, key=None), 401)["code"] == "invalid_api_key"
    _assert_error(_post(strict, "/v1/completions", GOOD, key="wrong"), 401)
    with pytest.raises(openai.AuthenticationError):
        strict.client(api_key="wrong").models.list()
    assert [m.id for m in strict.client(api_key=KEY).models.list()] == ["tiny"]
    assert httpx.get(f"{strict.url}/health", timeout=30).status_code == 200  # open, for probes


def test_greedy_on_a_tiny_rwkv7_equals_in_process(strict: ServerProcess) -> None:
    got = strict.client(api_key=KEY).completions.create(
        model="tiny", prompt="Hello", max_tokens=16, temperature=0
    )
    with rwkv_ggml.Model(tiny_path("tiny-rwkv-7v0-834K-FP32.bin"), threads=1) as model:
        want = model.create_completion("Hello", max_tokens=16, temperature=0.0)
    assert isinstance(want, dict)
    assert got.choices[0].text == want["choices"][0]["text"]


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _open_stream(server: ServerProcess, max_tokens: int = 100000) -> tuple[httpx.Client, httpx.Response]:
    """A streaming completion left open (the caller closes it)."""
    client = httpx.Client(timeout=30)
    request = client.build_request(
        "POST",
        f"{server.url}/v1/completions",
        json={**GOOD, "max_tokens": max_tokens, "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    response = client.send(request, stream=True)
    assert response.status_code == 200, response.read()
    return client, response


def test_a_disconnecting_client_frees_its_slot_and_a_full_queue_answers_429(strict: ServerProcess) -> None:
    running_client, running = _open_stream(strict)
    lines = running.iter_lines()
    assert next(lines).startswith("data: ")  # it holds the one slot and is generating
    waiting_client, waiting = _open_stream(strict)  # admitted: takes the one waiting place
    _wait_for(lambda: strict.health()["waiting"] == 1, "the second request to wait")
    refused = _post(strict, "/v1/completions", GOOD)
    assert _assert_error(refused, 429)["type"] == "rate_limit_error"
    assert refused.headers["Retry-After"].isdigit()
    # the running client goes away mid-stream: its slot goes to the waiting request at once
    running.close()
    running_client.close()
    _wait_for(lambda: strict.health()["waiting"] == 0, "the waiting request to get the freed slot")
    waiting.close()
    waiting_client.close()
    _wait_for(lambda: strict.health()["running"] == 0, "the second disconnect to free the slot")
    done = strict.client(api_key=KEY).completions.create(model="tiny", prompt="Hello", max_tokens=4)
    assert done.choices[0].finish_reason == "length"
    metrics = httpx.get(f"{strict.url}/metrics", timeout=30).text
    assert 'rwkv_http_responses_total{route="/v1/completions",status="429"}' in metrics


def test_sigterm_under_load_ends_every_request_and_exits_0(tmp_path: Path) -> None:
    with running_server(
        tmp_path, "--max-batch", "2", "--max-queue", "8", "--shutdown-timeout", "1"
    ) as server:
        outcomes: list[str] = []
        lock = threading.Lock()

        def stream_forever() -> None:
            try:
                with httpx.stream(
                    "POST",
                    f"{server.url}/v1/completions",
                    json={"prompt": "Hello", "max_tokens": 4000, "stream": True},
                    timeout=WAIT_S,
                ) as response:
                    if response.status_code != 200:
                        outcome = f"status {response.status_code}"
                    else:
                        last = [line for line in response.iter_lines() if line][-1]
                        outcome = (
                            "done" if last == "data: [DONE]" else "error event" if "error" in last else last
                        )
            except httpx.HTTPError as exc:
                outcome = f"connection: {type(exc).__name__}"
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=stream_forever) for _ in range(6)]
        for t in threads:
            t.start()
        _wait_for(lambda: server.health()["running"] == 2, "two requests to run")
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(WAIT_S)
        assert not any(t.is_alive() for t in threads), "a request was left hanging"
        assert server.proc.wait(WAIT_S) == 0, server.output()
    assert len(outcomes) == 6
    # the two running streams were cut at the grace period with an error event; the waiting ones too
    # (or they found the server gone); none hung
    assert outcomes.count("error event") >= 2, outcomes
