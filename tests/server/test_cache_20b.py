"""The state cache with a BPE vocabulary (GPT-NeoX 20B, on a random-weight model): the second chat turn
starts from the state after the first turn's prompt and reply as the history renders them. The 20B
tokenizer writes a text's final "\\n\\n" as one token but as two before the next message, so the rendered
reply is cached without its separator (with it, the entry never matched)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import rwkv_ggml
from rwkv_ggml.chat_format import ChatTemplate
from rwkv_ggml.fileformat import DType, write_model_file
from tests.reference.random_models import random_model_weights
from tests.server.conftest import ServerProcess, running_server

N_VOCAB_20B = 50277


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("random20b") / "random-20b.bin"
    weights = random_model_weights("4", 64, 2, N_VOCAB_20B, seed=11)
    write_model_file(
        path, n_vocab=N_VOCAB_20B, n_embed=64, n_layer=2, data_type=DType.F32, tensors=weights.items()
    )
    return path


@pytest.fixture(scope="module")
def server(model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(
        tmp_path_factory.mktemp("server20b"), "-m", str(model_file), "--model-name", "r"
    ) as s:
        yield s


def test_the_second_turn_starts_after_the_rendered_first_turn(
    server: ServerProcess, model_file: Path
) -> None:
    client = server.client()
    # the random model's reply to this one is not the tokenizer's own tokenization of its text (the
    # reply's tokens differ from the rendered history's), so only the rendered-reply entry can match
    history = [{"role": "user", "content": "Question 0: what next?"}]
    first = client.chat.completions.create(
        model="r",
        messages=history,  # type: ignore[arg-type]
        max_tokens=12,
        temperature=0,
    )
    reply = first.choices[0].message.content or ""
    assert reply.strip()
    assert first.usage is not None
    history += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And then?"}]
    second = client.chat.completions.create(
        model="r",
        messages=history,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
    )
    with rwkv_ggml.Model(model_file, threads=1) as model:
        assert model.tokenizer.name != "bytes"
        first_turn = model.tokenize(ChatTemplate().render(history[:2], add_generation_prompt=False).rstrip())
        want = model.create_chat_completion(history, max_tokens=8, temperature=0.0)  # type: ignore[arg-type]
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens == len(first_turn) > first.usage.prompt_tokens
    assert isinstance(want, dict)
    assert second.choices[0].message.content == want["choices"][0]["message"]["content"]
