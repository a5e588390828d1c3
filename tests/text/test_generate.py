"""Generation, completion, embeddings and chat (rwkv_ggml/generation.py).

On the rwkv.cpp tiny byte-level models (read from ../shared/testdata) and the packaged default model;
the exact streaming and stop-string rules on a scripted stand-in model whose next token is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from rwkv_ggml import Model
from rwkv_ggml.generation import (
    DEFAULT_MODEL_FILE,
    ChatSession,
    Generation,
    complete,
    default_model_path,
    embed,
    generate,
)
from rwkv_ggml.sampling import SamplingParams
from rwkv_ggml.tokenizer import Tokenizer
from tests.conftest import tiny_path

GREEDY = {"temperature": 0.0}


@pytest.fixture(scope="module")
def tiny4() -> Model:
    with Model(tiny_path("tiny-rwkv-4v0-660K-FP32.bin"), threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def tiny5() -> Model:
    with Model(tiny_path("tiny-rwkv-5v2-730K-FP32.bin"), threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def default_model() -> Model:
    with Model(default_model_path(), threads=1) as m:
        yield m


class ScriptedModel:
    """A stand-in Model whose next token is always the next byte of ``script`` (one-hot logits).

    The state is one float: how many tokens were fed. Enough for generate(), which only uses
    eval_sequence/eval/init_state/_check_state and the sizes."""

    n_vocab = 256
    state_size = 1

    def __init__(self, script: bytes, prompt_len: int) -> None:
        self.script = script
        self.prompt_len = prompt_len
        self.evals = 0

    def init_state(self) -> np.ndarray:
        return np.zeros(1, dtype=np.float32)

    def _check_state(self, state: np.ndarray, what: str, writable: bool = False) -> np.ndarray:
        return state

    def _logits(self, fed: int) -> np.ndarray:
        logits = np.zeros(256, dtype=np.float32)
        i = fed - self.prompt_len
        logits[self.script[i] if i < len(self.script) else 0] = 50.0
        return logits

    def eval_sequence(self, tokens: Sequence[int], state: np.ndarray | None = None, **_: object):
        fed = (0 if state is None else int(state[0])) + len(tokens)
        return self._logits(fed), np.array([fed], dtype=np.float32)

    def eval(
        self, token: int, state: np.ndarray | None = None, *, state_out: np.ndarray | None = None, **_: object
    ):
        self.evals += 1
        fed = (0 if state is None else int(state[0])) + 1
        new = np.array([fed], dtype=np.float32)
        if state_out is not None:
            state_out[...] = new
            new = state_out
        return self._logits(fed), new


def _greedy_reference(model: Model, prompt: bytes, n: int) -> list[int]:
    """Greedy decoding written out by hand with Model.eval, one token at a time."""
    state = None
    logits = None
    for tok in prompt:
        logits, state = model.eval(tok, state)
    out: list[int] = []
    for _ in range(n):
        tok = int(np.argmax(logits))
        out.append(tok)
        logits, state = model.eval(tok, state)
    return out


# ---- generate: tokens, text, streaming -----------------------------------------------------------


@pytest.mark.parametrize("which", ["tiny4", "tiny5"])
def test_greedy_matches_hand_written_loop(which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    gen = generate(model, "In the beginning", 24, **GREEDY)
    text = "".join(gen)
    assert gen.tokens == _greedy_reference(model, b"In the beginning", 24)
    assert gen.finish_reason == "length"
    assert text == gen.text == Tokenizer.for_model(model).decode(gen.tokens)
    assert isinstance(gen, Generation)


def test_prompt_as_tokens_equals_prompt_as_text(tiny4: Model) -> None:
    a = generate(tiny4, "Hello there", 12, **GREEDY)
    b = generate(tiny4, list(b"Hello there"), 12, **GREEDY)
    c = generate(tiny4, np.frombuffer(b"Hello there", dtype=np.uint8).astype(np.int64), 12, **GREEDY)
    assert "".join(a) == "".join(b) == "".join(c)
    assert a.tokens == b.tokens == c.tokens


def test_streams_chunk_by_chunk(tiny4: Model) -> None:
    gen = generate(tiny4, "The", 8, **GREEDY)
    first = next(gen)
    assert isinstance(first, str) and first
    assert len(gen.tokens) == 1  # nothing more was computed than the first chunk needed
    rest = list(gen)
    assert first + "".join(rest) == gen.text
    assert len(gen.tokens) == 8


def test_multibyte_characters_never_come_out_broken() -> None:
    text = "héllo 世界 🙂 naïve ∑x"
    script = text.encode("utf-8")
    model = ScriptedModel(script, prompt_len=1)
    gen = generate(model, "a", len(script), tokenizer="bytes", **GREEDY)
    chunks = list(gen)
    assert "".join(chunks) == text
    assert all("\ufffd" not in c for c in chunks)
    # one chunk per complete character: the 4-byte emoji arrives as one chunk, after 4 tokens
    assert "🙂" in chunks and "世" in chunks
    assert len(chunks) == len(text)


def test_invalid_bytes_come_out_as_replacement_characters() -> None:
    script = b"ok \xff\xfe done \xe4\xb8"  # never-valid bytes, then a character cut off by max_tokens
    model = ScriptedModel(script, prompt_len=1)
    out = complete(model, "a", len(script), tokenizer="bytes", **GREEDY)
    assert out == script.decode("utf-8", errors="replace")


def test_max_tokens_zero_and_bad_max_tokens(tiny4: Model) -> None:
    gen = generate(tiny4, "x", 0)
    assert list(gen) == [] and gen.finish_reason == "length" and gen.tokens == []
    with pytest.raises(ValueError, match="max_tokens"):
        generate(tiny4, "x", -1)
    with pytest.raises(ValueError, match="max_tokens"):
        generate(tiny4, "x", 2.5)  # type: ignore[arg-type]


# ---- state continuation --------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tiny4", "tiny5"])
def test_two_calls_with_carried_state_equal_one_call(which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    whole = generate(model, "Once upon", 30, **GREEDY)
    whole_text = "".join(whole)
    first = generate(model, "Once upon", 12, **GREEDY)
    first_text = "".join(first)
    second = generate(model, "", 18, state=first.state, logits=first.logits, **GREEDY)
    second_text = "".join(second)
    assert first.tokens + second.tokens == whole.tokens
    assert first_text + second_text == whole_text
    # and the final states agree (same tokens through the same per-token path)
    np.testing.assert_allclose(second.state, whole.state, rtol=0, atol=1e-5)


def test_prompt_on_top_of_a_state_equals_the_joined_prompt(tiny4: Model) -> None:
    _, state = tiny4.eval_sequence(list(b"The king "))
    a = generate(tiny4, "said to him", 16, state=state, **GREEDY)
    b = generate(tiny4, "The king said to him", 16, **GREEDY)
    assert "".join(a) == "".join(b)
    # the caller's state is not modified
    _, again = tiny4.eval_sequence(list(b"The king "))
    np.testing.assert_array_equal(state, again)


def test_state_and_logits_describe_every_generated_token(tiny4: Model) -> None:
    gen = generate(tiny4, "ab", 5, **GREEDY)
    list(gen)
    logits, state = tiny4.eval_sequence(list(b"ab") + gen.tokens)
    np.testing.assert_allclose(gen.state, state, atol=1e-5)
    np.testing.assert_allclose(gen.logits, logits, atol=1e-4)


def test_last_token_is_fed_only_when_state_is_asked_for() -> None:
    model = ScriptedModel(b"abcdef", prompt_len=1)
    gen = generate(model, "x", 3, tokenizer="bytes", **GREEDY)
    assert "".join(gen) == "abc"
    assert model.evals == 2  # a and b fed to get the next logits; c is still pending
    assert gen.state[0] == 4  # prompt + 3 tokens
    assert model.evals == 3


def test_empty_prompt(tiny4: Model) -> None:
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(tiny4, "")
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(tiny4, [], state=tiny4.init_state())  # a state without logits is not enough
    with pytest.raises(ValueError, match="empty"):
        complete(tiny4, "")


# ---- stops ---------------------------------------------------------------------------------------


def test_stop_string_scripted() -> None:
    model = ScriptedModel(b"abc STOP def", prompt_len=1)
    gen = generate(model, "x", 20, tokenizer="bytes", stop="STOP", **GREEDY)
    assert "".join(gen) == "abc "
    assert gen.finish_reason == "stop_string"
    # a partial match that turns out not to be the stop string is emitted after all
    model = ScriptedModel(b"abc STOnE def", prompt_len=1)
    assert complete(model, "x", 13, tokenizer="bytes", stop=["STOP", "zzz"], **GREEDY) == "abc STOnE def"


def test_stop_string_real_model(tiny4: Model) -> None:
    full = complete(tiny4, "The", 40, **GREEDY)
    stop = full[6:9]
    gen = generate(tiny4, "The", 40, stop=stop, **GREEDY)
    assert "".join(gen) == full[: full.find(stop)]
    assert gen.finish_reason == "stop_string"


def test_stop_token(tiny4: Model) -> None:
    ref = generate(tiny4, "The", 30, **GREEDY)
    list(ref)
    stop_tok = ref.tokens[5]
    gen = generate(tiny4, "The", 30, stop_tokens=[stop_tok], **GREEDY)
    text = "".join(gen)
    first = ref.tokens.index(stop_tok)
    assert gen.tokens == ref.tokens[:first]
    assert text == bytes(ref.tokens[:first]).decode("utf-8", errors="replace")
    assert gen.finish_reason == "stop_token"


# ---- sampling options ----------------------------------------------------------------------------


def test_seed_reproducibility(tiny4: Model) -> None:
    a = complete(tiny4, "The", 40, seed=7, temperature=1.0)
    b = complete(tiny4, "The", 40, seed=7, temperature=1.0)
    c = complete(tiny4, "The", 40, seed=8, temperature=1.0)
    assert a == b
    assert a != c


def test_params_object_and_overrides(tiny4: Model) -> None:
    params = SamplingParams(temperature=1.0, seed=3, top_k=5)
    a = complete(tiny4, "The", 20, params=params)
    b = complete(tiny4, "The", 20, temperature=1.0, seed=3, top_k=5)
    assert a == b
    assert complete(tiny4, "The", 20, params=params, temperature=0.0) == complete(tiny4, "The", 20, **GREEDY)


def test_bad_sampling_options_fail_before_generating(tiny4: Model) -> None:
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny4, "x", temperature=-1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        generate(tiny4, "x", temprature=0.5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(tiny4, "x", stop_tokens=[300])
    with pytest.raises(ValueError, match="stop"):
        generate(tiny4, "x", stop="")
    with pytest.raises(ValueError, match="vocabulary"):
        generate(tiny4, [1, 2, 999])
    with pytest.raises(ValueError):
        generate(tiny4, "x", tokenizer="world")  # 65536 ids do not fit 256 rows


# ---- complete, embed, Model methods --------------------------------------------------------------


def test_complete_is_the_joined_stream(tiny4: Model) -> None:
    assert complete(tiny4, "The", 15, **GREEDY) == "".join(generate(tiny4, "The", 15, **GREEDY))


def test_model_methods_delegate(tiny4: Model) -> None:
    assert tiny4.complete("The", 10, **GREEDY) == complete(tiny4, "The", 10, **GREEDY)
    assert "".join(tiny4.generate("The", 10, **GREEDY)) == complete(tiny4, "The", 10, **GREEDY)
    np.testing.assert_array_equal(tiny4.embed("The"), embed(tiny4, "The"))
    assert isinstance(tiny4.chat_session(), ChatSession)


@pytest.mark.parametrize("which", ["tiny4", "tiny5"])
def test_embed(which: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(which)
    a = embed(model, "The cat sat on the mat.")
    assert a.shape == (model.n_embed,) and a.dtype == np.float32
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-5
    np.testing.assert_array_equal(a, embed(model, "The cat sat on the mat."))  # deterministic
    np.testing.assert_array_equal(a, embed(model, list(b"The cat sat on the mat.")))
    b = embed(model, "Stock prices fell sharply on Monday")
    assert float(a @ b) < 0.999
    assert np.max(np.abs(a - b)) > 1e-3
    # the definition: ln_out output of the last token, normalised
    hidden, _ = model.hidden(list(b"The cat sat on the mat."))
    np.testing.assert_allclose(a, hidden / np.linalg.norm(hidden), atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        embed(model, "")


# ---- chat ----------------------------------------------------------------------------------------


def test_chat_keeps_the_transcript_in_the_state(tiny4: Model, tmp_path: Path) -> None:
    chat = ChatSession(tiny4, **GREEDY)
    r1 = chat.ask("Hello\n\nthere", max_tokens=12)
    r2 = chat.ask("How are you?", max_tokens=12)
    assert r1 == r1.strip() and r2 == r2.strip()  # the space after "Assistant:" is not part of a reply
    transcript = f"User: Hello\nthere\n\nAssistant: {r1}\n\nUser: How are you?\n\nAssistant: {r2}\n\n"
    _, expected = tiny4.eval_sequence(list(transcript.encode()))
    np.testing.assert_allclose(chat.state, expected, atol=1e-4)

    path = tmp_path / "conv.state"
    chat.save(path)
    chat.reset()
    np.testing.assert_array_equal(chat.state, tiny4.init_state())
    chat.load(path)
    np.testing.assert_allclose(chat.state, expected, atol=1e-4)
    # the same next reply as a session that never saved
    other = ChatSession(tiny4, **GREEDY)
    other.state = expected
    assert chat.ask("Bye", 10) == other.ask("Bye", 10)
    with pytest.raises(ValueError, match="empty"):
        chat.send("   ")


def test_chat_stops_at_the_next_user_turn() -> None:
    model = ScriptedModel(b" Fine thanks.\n\nUser: and", prompt_len=len(b"User: hi\n\nAssistant:"))
    chat = ChatSession(model, "bytes", **GREEDY)  # type: ignore[arg-type]
    chunks = list(chat.send("hi", 100))
    assert "".join(chunks) == "Fine thanks."


def test_chat_reply_drops_the_newline_after_assistant_and_extra_stops_add_to_the_turn_stop() -> None:
    model = ScriptedModel(b"\n Fine.\n\nUser: and", prompt_len=len(b"User: hi\n\nAssistant:"))
    chat = ChatSession(model, "bytes", stop="never", **GREEDY)  # type: ignore[arg-type]
    assert chat.ask("hi", 100) == "Fine."


# ---- the packaged default model -----------------------------------------------------------------


def test_default_model_is_packaged() -> None:
    assert default_model_path() == DEFAULT_MODEL_FILE
    size = DEFAULT_MODEL_FILE.stat().st_size
    assert 1 << 20 < size < 16 << 20, size


# fmt: off
COMMON_WORDS = frozenset({
    "the", "and", "to", "of", "a", "i", "you", "my", "in", "that", "is", "not", "it", "me", "with", "be",
    "your", "his", "for", "this", "he", "have", "what", "so", "her", "but", "as", "will", "thou", "all",
    "shall", "him", "thy", "no", "by", "do", "are", "we", "our", "on", "thee", "from", "now", "at", "if",
    "or", "good", "lord",
})
# fmt: on


def test_default_model_writes_english(default_model: Model) -> None:
    text = complete(default_model, "Once upon a time", 200, seed=0, temperature=0.8, top_p=0.9)
    words = [w.strip(".,;:!?'\"-()[]").lower() for w in text.split()]
    common = [w for w in words if w in COMMON_WORDS]
    assert len(common) >= 8, text
    assert sum(c.isascii() for c in text) >= 0.95 * len(text), text


def test_default_model_perplexity_on_english(default_model: Model) -> None:
    text = (
        "Now is the winter of our discontent made glorious summer by this sun of York; and all the clouds "
        "that lour'd upon our house in the deep bosom of the ocean buried."
    )
    _, ppl = default_model.perplexity(list(text.encode()))
    assert ppl < 6.0, ppl  # a uniform byte model would score 256
