"""Structured output (rwkv_ggml/structured.py and its use in sampling, generation, completions, batches).

The outputs are checked with tools independent of the engine that produced them: ``json`` + ``jsonschema``
for JSON schemas, ``re.fullmatch`` for regular expressions, a small recursive-descent parser written here
for the Lark grammar. Random-weight models are the hard case (only the constraint keeps them on track), so
their schemas bound every string, number and array: an unbounded one would be valid but endless, and the
test asks for complete texts ("stop") within max_tokens.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import rwkv_ggml
from rwkv_ggml import ConstraintError, Model
from rwkv_ggml.batch_generation import BatchGenerator, generate_batch
from rwkv_ggml.fileformat import DType, write_model_file
from rwkv_ggml.generation import default_model_path, generate
from rwkv_ggml.sampling import Sampler, SamplingParams
from rwkv_ggml.structured import Constraint, constraint_from_options
from rwkv_ggml.tokenizer import Tokenizer
from tests.conftest import REPO_ROOT, run_cli
from tests.reference.random_models import random_model_weights

pytest.importorskip("llguidance")

# Bounded schemas: every output of a random model must end within max_tokens.
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blé"]}, "minItems": 1, "maxItems": 3},
        "pos": {
            "type": "object",
            "properties": {
                "x": {"type": "integer", "minimum": -50, "maximum": 50},
                "ok": {"type": "boolean"},
            },
            "required": ["x"],
            "additionalProperties": False,
        },
        "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2}$"},
        "nick": {"type": "string", "maxLength": 3},
    },
    "required": ["name", "age", "tags", "pos", "code"],
    "additionalProperties": False,
}
UNICODE = {
    "type": "object",
    "properties": {
        "city": {"enum": ["Zürich", "東京", "Ελλάδα", "🙂🙃"]},
        "word": {"type": "string", "pattern": "^[éàü日本]{1,4}$"},
    },
    "required": ["city", "word"],
    "additionalProperties": False,
}
# Numbers with ranges can have any number of decimals: only for the trained default model.
MEASURE = {
    "type": "object",
    "properties": {
        "value": {"type": "number", "minimum": -10, "maximum": 10},
        "unit": {"enum": ["m", "kg"]},
        "items": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 9}, "maxItems": 4},
    },
    "required": ["value", "unit"],
    "additionalProperties": False,
}
REGEX = r"[A-Z][a-z]{1,5}-[0-9]{1,3}( (yes|no|été))?"
# Fully parenthesised arithmetic: a context-free language (balanced parentheses), parsed below by hand.
ARITHMETIC = r"""
start: expr
expr: NUMBER | "(" expr OP expr ")"
OP: "+" | "-" | "*"
NUMBER: /[1-9][0-9]?/
"""
TEMPERATURE_1 = {"temperature": 1.0, "top_p": 1.0}


def _json_format(schema: dict[str, object]) -> dict[str, object]:
    return {"type": "json_schema", "json_schema": {"name": "test", "schema": schema, "strict": True}}


def _parse_arithmetic(text: str) -> int:
    """Evaluates a text of the ARITHMETIC language; AssertionError for anything else."""
    pos = 0

    def expr() -> int:
        nonlocal pos
        if text.startswith("(", pos):
            pos += 1
            left = expr()
            op = text[pos]
            assert op in "+-*", f"operator expected at {pos} in {text!r}"
            pos += 1
            right = expr()
            assert text.startswith(")", pos), f"')' expected at {pos} in {text!r}"
            pos += 1
            return left + right if op == "+" else left - right if op == "-" else left * right
        number = re.match(r"[1-9][0-9]?", text[pos:])
        assert number, f"number expected at {pos} in {text!r}"
        pos += number.end()
        return int(number.group())

    value = expr()
    assert pos == len(text), f"trailing text at {pos} in {text!r}"
    return value


def _random_model(directory: Path, n_vocab: int) -> Path:
    path = directory / f"random-{n_vocab}.bin"
    weights = random_model_weights("4", 64, 2, n_vocab, seed=7)
    write_model_file(
        path, n_vocab=n_vocab, n_embed=64, n_layer=2, data_type=DType.F32, tensors=weights.items()
    )
    return path


@pytest.fixture(scope="module")
def default_model() -> Model:
    with Model(default_model_path(), threads=1) as m:
        yield m


@pytest.fixture(scope="module", params=[65536, 50277], ids=["world", "20b"])
def random_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Model:
    with Model(_random_model(tmp_path_factory.mktemp("structured"), request.param), threads=1) as m:
        yield m


@pytest.fixture(scope="module")
def world_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    with Model(_random_model(tmp_path_factory.mktemp("structured-world"), 65536), threads=1) as m:
        yield m


# ---- sampled outputs validate, on every tokenizer ----


@pytest.mark.parametrize("schema", [PERSON, UNICODE], ids=["person", "unicode"])
def test_random_model_json_always_valid(random_model: Model, schema: dict[str, object]) -> None:
    for seed in range(6):
        gen = generate(
            random_model, "Data: ", 120, seed=seed, response_format=_json_format(schema), **TEMPERATURE_1
        )
        text = "".join(gen)
        assert gen.finish_reason == "stop", (seed, text)
        jsonschema.validate(json.loads(text), schema)
        assert random_model.tokenizer.eos_token_id not in gen.tokens


@pytest.mark.parametrize("schema", [PERSON, UNICODE, MEASURE], ids=["person", "unicode", "measure"])
def test_default_model_json_always_valid(default_model: Model, schema: dict[str, object]) -> None:
    for seed in range(8):
        gen = generate(
            default_model, "JSON: ", 150, seed=seed, response_format=_json_format(schema), **TEMPERATURE_1
        )
        text = "".join(gen)
        assert gen.finish_reason == "stop", (seed, text)
        jsonschema.validate(json.loads(text), schema)


def test_json_object(default_model: Model, world_model: Model) -> None:
    for model in (default_model, world_model):
        result = model.create_completion(
            "An object: ", max_tokens=40, seed=1, response_format={"type": "json_object"}, temperature=0.0
        )
        text = result["choices"][0]["text"]
        assert text.startswith("{")
        if result["choices"][0]["finish_reason"] == "stop":
            assert isinstance(json.loads(text), dict)


def test_regex_always_matches(default_model: Model, random_model: Model) -> None:
    for model in (default_model, random_model):
        for seed in range(6):
            gen = generate(model, "Answer: ", 40, seed=seed, regex=REGEX, **TEMPERATURE_1)
            text = "".join(gen)
            assert gen.finish_reason == "stop", (seed, text)
            assert re.fullmatch(REGEX, text), text


def test_lark_grammar_output_parses(default_model: Model, random_model: Model) -> None:
    for model in (default_model, random_model):
        for seed in range(6):
            gen = generate(model, "Sum: ", 120, seed=seed, grammar=ARITHMETIC, **TEMPERATURE_1)
            text = "".join(gen)
            assert gen.finish_reason == "stop", (seed, text)
            _parse_arithmetic(text)


def test_gbnf_grammar(default_model: Model, world_model: Model) -> None:
    """llama.cpp's GBNF is accepted too (llguidance converts it)."""
    gbnf = 'root ::= answer " " answer\nanswer ::= "yes" | "no" | "maybe"'
    for model in (default_model, world_model):
        for seed in range(3):
            text = "".join(generate(model, "Q: ", 20, grammar=gbnf, seed=seed, **TEMPERATURE_1))
            assert re.fullmatch("(yes|no|maybe) (yes|no|maybe)", text), text


def test_bytes_model_ends_as_soon_as_complete(default_model: Model) -> None:
    """The byte vocabulary has no end-of-text token: the text ends at its first complete point."""
    gen = generate(default_model, "x", 20, regex="a+", seed=0)
    assert "".join(gen) == "a" and gen.finish_reason == "stop"


# ---- tokens: multi-byte characters, World byte tokens, end of text ----


def _constraint(tokenizer: Tokenizer, n_vocab: int, **options: object) -> Constraint:
    c = constraint_from_options(tokenizer, n_vocab, **options)  # type: ignore[arg-type]
    assert c is not None
    return c


@pytest.mark.parametrize("kind", ["world", "20b", "bytes"])
def test_multibyte_character_split_across_tokens(kind: str) -> None:
    tok = Tokenizer.for_vocab_size({"world": 65536, "20b": 50277, "bytes": 256}[kind])
    c = _constraint(tok, tok.n_vocab, regex="(日本|é)+")
    first = tok.encode_bytes(b"\xe6")  # the first byte of 日 alone: a byte token
    assert len(first) == 1 and tok.decode_bytes(first) == b"\xe6"
    assert c.allowed_tokens()[first[0]]
    c.consume(first[0])
    mask = c.allowed_tokens()
    rest = tok.encode_bytes(b"\x97\xa5")  # the rest of 日, as byte tokens
    assert mask[rest[0]] and not mask[tok.encode_bytes(b"a")[0]]
    assert not c.complete
    for t in rest + tok.encode_bytes("本é".encode()):
        assert c.allowed_tokens()[t]
        c.consume(t)
    assert c.complete
    with pytest.raises(ConstraintError, match="not allowed"):
        c.consume(tok.encode_bytes(b"x")[0])


def test_world_byte_tokens_are_sampled_and_valid(world_model: Model) -> None:
    """A random World model samples byte tokens (ids 1..256) inside multi-byte characters; the text is still
    valid UTF-8 and valid under the schema."""
    byte_tokens_seen = 0
    for seed in range(8):
        gen = generate(world_model, "x", 60, seed=seed, regex="[日本語éü]{3,6}", **TEMPERATURE_1)
        text = "".join(gen)
        assert gen.finish_reason == "stop" and re.fullmatch("[日本語éü]{3,6}", text), text
        assert world_model.tokenizer.decode_bytes(gen.tokens) == text.encode()
        byte_tokens_seen += sum(1 for t in gen.tokens if 129 <= t <= 256)  # bytes 0x80..0xff
    assert byte_tokens_seen > 0


@pytest.mark.parametrize("kind", ["world", "20b"])
def test_end_of_text_only_when_complete(kind: str) -> None:
    tok = Tokenizer.for_vocab_size({"world": 65536, "20b": 50277}[kind])
    c = _constraint(tok, tok.n_vocab, regex="a+b?")
    assert c.eos_token_id == 0
    assert not c.allowed_tokens()[0]  # nothing written yet: end of text forbidden
    c.consume(tok.encode("a")[0])
    assert c.allowed_tokens()[0] and c.complete and not c.finished
    if kind == "20b":
        assert not c.allowed_tokens()[1]  # <|padding|> is never text
    c.consume(tok.encode("b")[0])
    assert c.finished  # nothing may follow "ab"


def test_end_of_text_sampled_stops(world_model: Model) -> None:
    """With logit_bias the end-of-text token wins as soon as the constraint allows it."""
    gen = generate(world_model, "x", 30, regex="[a-z]+", logit_bias={0: 50.0}, seed=0)
    text = "".join(gen)
    assert gen.finish_reason == "stop" and len(gen.tokens) == 1 and re.fullmatch("[a-z]+", text)


def test_model_vocabulary_larger_than_tokenizer() -> None:
    tok = Tokenizer.for_vocab_size(256)
    c = _constraint(tok, 300, regex="[ab]+")
    mask = c.allowed_tokens()
    assert mask.shape == (300,) and np.flatnonzero(mask).tolist() == [ord("a"), ord("b")]
    c.consume(ord("a"))
    assert c.complete and np.flatnonzero(c.allowed_tokens()).tolist() == [ord("a"), ord("b")]
    with pytest.raises(ConstraintError, match="not allowed"):
        c.consume(256)  # a model id the tokenizer has no bytes for (llguidance's virtual end-of-text)


# ---- the sampler never picks a forbidden token ----


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 0.0},
        {"temperature": 1.0, "top_p": 1.0},
        {"temperature": 5.0, "top_k": 3},
        {"temperature": 0.7, "top_p": 0.5, "min_p": 0.2},
        {"repetition_penalty": 3.0, "presence_penalty": 5.0, "frequency_penalty": 5.0},
    ],
)
def test_sampler_never_picks_a_masked_token(options: dict[str, float]) -> None:
    rng = np.random.default_rng(0)
    n = 1000
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, 7, replace=False)] = True
    bias = {int(t): 100.0 for t in np.flatnonzero(~mask)[:50]}  # forbidden tokens made very likely
    sampler = Sampler(SamplingParams(seed=1, logit_bias=bias, **options), n)  # type: ignore[arg-type]
    for _ in range(300):
        logits = rng.standard_normal(n).astype(np.float32) * 10
        token = sampler.sample(logits, mask)
        assert mask[token]
        probs = sampler.probabilities(logits, mask)
        assert probs[~mask].sum() == 0.0 and probs.sum() == pytest.approx(1.0)
        sampler.accept(token)


def test_sampler_mask_errors() -> None:
    sampler = Sampler(SamplingParams(banned_tokens=[3]), 10)
    mask = np.zeros(10, dtype=bool)
    mask[3] = True
    with pytest.raises(ConstraintError, match="banned"):
        sampler.sample(np.zeros(10, dtype=np.float32), mask)
    with pytest.raises(ValueError, match="boolean array"):
        sampler.sample(np.zeros(10, dtype=np.float32), np.ones(9, dtype=bool))
    with pytest.raises(ValueError, match="boolean array"):
        sampler.sample(np.zeros(10, dtype=np.float32), np.ones(10, dtype=np.int32))  # type: ignore[arg-type]


# ---- finishing ----


def test_max_tokens_too_small_is_length(world_model: Model, default_model: Model) -> None:
    for model in (world_model, default_model):
        gen = generate(model, "x", 5, response_format=_json_format(PERSON), seed=0)
        text = "".join(gen)
        assert gen.finish_reason == "length" and len(gen.tokens) == 5 and text.startswith('{"')


def test_complete_with_zero_max_tokens_and_empty_language(default_model: Model) -> None:
    gen = generate(default_model, "x", 10, regex="", seed=0)
    assert "".join(gen) == "" and gen.finish_reason == "stop"


def test_stop_reason_in_openai_shapes(default_model: Model) -> None:
    chat = default_model.create_chat_completion(
        [{"role": "user", "content": "Pick a colour."}],
        max_tokens=50,
        seed=2,
        response_format=_json_format(UNICODE),
    )
    choice = chat["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), UNICODE)
    chunks = list(default_model.create_completion("Say: ", max_tokens=20, regex=REGEX, stream=True, seed=3))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert re.fullmatch(REGEX, "".join(c["choices"][0]["text"] for c in chunks))
    assert re.fullmatch(REGEX, default_model.complete("Say: ", 20, regex=REGEX, seed=3))
    assert re.fullmatch(REGEX, rwkv_ggml.complete(default_model, "Say: ", 20, regex=REGEX, seed=4))


# ---- bad inputs ----


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"regex": "[a-"}, "regular expression.*unclosed"),
        ({"grammar": "start: foo"}, "grammar.*foo"),
        ({"grammar": "  "}, "grammar is empty"),
        ({"response_format": _json_format({"type": "objectx"})}, "JSON schema.*objectx"),
        ({"response_format": _json_format({"type": "integer", "minimum": 5, "maximum": 3})}, "Unsatisfiable"),
        ({"response_format": _json_format({"type": "string", "pattern": "[a-"})}, "JSON schema.*unclosed"),
        ({"response_format": {"type": "xml"}}, "unknown response_format type 'xml'"),
        ({"response_format": {"type": "json_schema"}}, "needs 'json_schema'"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}}, "no 'schema'"),
        ({"response_format": "json"}, "must be a dict"),
        ({"json_schema": "{not json"}, "not valid JSON"),
        ({"json_schema": [1, 2]}, "must be an object"),
        ({"regex": "a", "grammar": "start: 'a'"}, "only one of"),
        ({"regex": 5}, "regex must be a str"),
    ],
)
def test_bad_constraints_are_clear_errors(options: dict[str, object], message: str) -> None:
    tok = Tokenizer.for_vocab_size(65536)
    with pytest.raises(ConstraintError, match="(?s)" + message):
        constraint_from_options(tok, 65536, **options)  # type: ignore[arg-type]


def test_bad_constraint_raises_before_anything_runs(default_model: Model) -> None:
    with pytest.raises(ConstraintError):
        default_model.create_completion("x", regex="(")
    with pytest.raises(ValueError):  # ConstraintError is a ValueError: an HTTP 400 for the server
        default_model.create_chat_completion([{"role": "user", "content": "x"}], grammar="start: nope")
    with pytest.raises(ConstraintError, match="not both"):
        generate(
            default_model, "x", regex="a", constraint=_constraint(default_model.tokenizer, 256, regex="b")
        )
    with pytest.raises(TypeError, match="Constraint"):
        generate(default_model, "x", constraint="a+")  # type: ignore[arg-type]
    with pytest.raises(ConstraintError, match="vocabulary of 300"):
        generate(default_model, "x", constraint=_constraint(default_model.tokenizer, 300, regex="a"))


def _accepts(constraint: Constraint, text: str) -> bool:
    tok = Tokenizer.for_vocab_size(constraint.n_vocab)
    for t in tok.encode(text):
        if not constraint.allowed_tokens()[t]:
            return False
        constraint.consume(t)
    return constraint.complete


@pytest.mark.parametrize("kind", ["world", "bytes"])
def test_objects_closed_unless_opened(kind: str) -> None:
    tok = Tokenizer.for_vocab_size({"world": 65536, "bytes": 256}[kind])
    inner = {"type": "object", "properties": {"b": {"type": "integer"}}}
    schema = {"type": "object", "properties": {"a": inner, "c": {"type": "array", "items": inner}}}
    closed = '{"a": {"b": 1}, "c": [{"b": 2}]}'
    assert _accepts(_constraint(tok, tok.n_vocab, json_schema=schema), closed)
    for extra in ('{"a": {"b": 1}, "x": 1}', '{"a": {"b": 1, "x": 1}}', '{"c": [{"b": 2, "x": 1}]}'):
        jsonschema.validate(json.loads(extra), schema)  # valid, but not what the closed schema allows
        assert not _accepts(_constraint(tok, tok.n_vocab, json_schema=schema), extra)
    opened = {**schema, "additionalProperties": True}
    assert _accepts(_constraint(tok, tok.n_vocab, json_schema=opened), '{"a": {"b": 1}, "x": 1}')
    assert _accepts(
        _constraint(tok, tok.n_vocab, response_format={"type": "json_object"}), '{"any": [1, "x"]}'
    )


def test_text_response_format_is_no_constraint() -> None:
    assert (
        constraint_from_options(Tokenizer.for_vocab_size(256), 256, response_format={"type": "text"}) is None
    )
    assert constraint_from_options(Tokenizer.for_vocab_size(256), 256) is None


# ---- no state shared between requests ----


def test_constraint_state_does_not_leak(default_model: Model) -> None:
    options = {"response_format": _json_format(PERSON), "seed": 4, **TEMPERATURE_1}
    alone = "".join(generate(default_model, "A: ", 80, **options))  # type: ignore[arg-type]
    first = generate(default_model, "A: ", 80, **options)  # type: ignore[arg-type]
    for _ in range(5):
        next(first)  # a request left half-way
    again = "".join(generate(default_model, "A: ", 80, **options))  # type: ignore[arg-type]
    assert again == alone
    head = first.text
    assert head + "".join(first) == alone  # the half-way request finishes as if alone
    reused = _constraint(default_model.tokenizer, 256, regex="[a-z]+")
    "".join(generate(default_model, "x", 5, constraint=reused))
    with pytest.raises(ConstraintError, match="already used"):
        generate(default_model, "x", 5, constraint=reused)
    batch = BatchGenerator(default_model)
    with pytest.raises(ConstraintError, match="already used"):
        batch.add("x", 5, constraint=reused)


def test_mask_on_worker_thread_gives_the_same_tokens(world_model: Model) -> None:
    """The overlapped mask (prefetch on the worker thread) and the one computed on demand are the same."""
    runs = []
    for threshold in (0.0, math.inf):
        c = _constraint(world_model.tokenizer, 65536, response_format=_json_format(PERSON))
        c.prefetch_threshold_s = threshold
        gen = generate(world_model, "Data: ", 120, constraint=c, seed=3, **TEMPERATURE_1)
        runs.append(("".join(gen), gen.tokens, gen.finish_reason))
        cs = [_constraint(world_model.tokenizer, 65536, regex=REGEX) for _ in range(3)]
        for c in cs:
            c.prefetch_threshold_s = threshold
        params = [SamplingParams(seed=s, **TEMPERATURE_1) for s in range(3)]
        runs.append(
            [r.text for r in generate_batch(world_model, ["a", "b", "c"], 40, params=params, constraints=cs)]
        )
    assert runs[0] == runs[2] and runs[1] == runs[3]
    assert runs[0][2] == "stop"


# ---- batches ----


def test_batch_each_sequence_its_own_constraint(default_model: Model) -> None:
    tok = default_model.tokenizer
    prompts = ["Name: ", "JSON: ", "Sum: ", "Free: "]
    options: list[dict[str, object]] = [
        {"regex": REGEX},
        {"response_format": _json_format(UNICODE)},
        {"grammar": ARITHMETIC},
        {},
    ]
    greedy = SamplingParams(temperature=0.0)
    results = generate_batch(
        default_model,
        prompts,
        40,
        params=greedy,
        constraints=[constraint_from_options(tok, 256, **o) for o in options],  # type: ignore[arg-type]
    )
    for prompt, o, result in zip(prompts, options, results, strict=True):
        gen = generate(default_model, prompt, 40, params=greedy, **o)  # type: ignore[arg-type]
        assert result.text == "".join(gen) and result.tokens == gen.tokens
    assert [r.finish_reason for r in results[:3]] == ["stop"] * 3
    assert re.fullmatch(REGEX, results[0].text)
    jsonschema.validate(json.loads(results[1].text), UNICODE)
    _parse_arithmetic(results[2].text)


def test_batch_sampled_constraints_valid(random_model: Model) -> None:
    params = [SamplingParams(seed=s, **TEMPERATURE_1) for s in range(8)]
    results = generate_batch(
        random_model, ["Data: "] * 8, 120, params=params, response_format=_json_format(PERSON)
    )
    for r in results:
        assert r.finish_reason == "stop", r.text
        jsonschema.validate(json.loads(r.text), PERSON)
    assert len({r.text for r in results}) > 1
    short = generate_batch(random_model, ["x", "y"], 4, response_format=_json_format(PERSON))
    assert [r.finish_reason for r in short] == ["length", "length"]


# ---- command line, and the package without llguidance ----


def test_cli_structured_options(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(UNICODE))
    done = run_cli("generate", "JSON: ", "--json-schema", str(schema), "--no-echo", "--seed", "3", "-n", "60")
    assert done.returncode == 0, done.stderr
    jsonschema.validate(json.loads(done.stdout), UNICODE)
    grammar = tmp_path / "arith.lark"
    grammar.write_text(ARITHMETIC)
    done = run_cli("generate", "Sum: ", "--grammar", str(grammar), "--no-echo", "--seed", "1", "-n", "60")
    assert done.returncode == 0, done.stderr
    _parse_arithmetic(done.stdout.rstrip("\n"))
    done = run_cli("generate", "x", "--regex", REGEX, "--no-echo", "-n", "30")
    assert done.returncode == 0 and re.fullmatch(REGEX, done.stdout.rstrip("\n"))
    bad = run_cli("generate", "x", "--regex", "[a-")
    assert bad.returncode == 1 and "bad regular expression" in bad.stderr and "Traceback" not in bad.stderr
    schema.write_text("{oops")
    bad = run_cli("generate", "x", "--json-schema", str(schema))
    assert bad.returncode == 1 and "not a JSON schema" in bad.stderr


def test_package_works_without_llguidance() -> None:
    script = (
        "import sys; sys.modules['llguidance'] = None\n"
        "import rwkv_ggml\n"
        "from rwkv_ggml.generation import default_model_path\n"
        "m = rwkv_ggml.Model(default_model_path())\n"
        "print(len(m.complete('Hi', 3, seed=1)) > 0)\n"
        "try:\n"
        "    m.create_completion('Hi', regex='a')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["True", "structured output needs the llguidance package: "
                                        "pip install 'rwkv_ggml[structured]'"]  # fmt: skip
    assert rwkv_ggml.ConstraintError is ConstraintError
