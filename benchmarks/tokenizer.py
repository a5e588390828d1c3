"""Tokenizer throughput: MB/s of encode and decode for each tokenizer on mixed text.

The text is generated here (no downloads), deterministic for a seed, and mixes the kinds of
input a chat model sees: English prose, Python code, CJK, emoji (with ZWJ sequences and skin
tones) and runs of whitespace. Throughput is input bytes per second (UTF-8) for both
directions, best of ``--repeat`` runs, single-threaded.

    .venv/bin/python benchmarks/tokenizer.py            # ~4 MB
    .venv/bin/python benchmarks/tokenizer.py --mb 1 --repeat 1

The target in issue 7 is >= 5 MB/s for World encoding on 2 cores (the C trie does several
times that). The pure-Python World trie is timed on a 1/8 slice because it is the slow
fallback and only there for reference.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rwkv_ggml.tokenizer import ByteTokenizer, NeoXTokenizer, Tokenizer, WorldTokenizer

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "that",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "his",
    "her",
    "they",
    "which",
    "this",
    "be",
    "are",
    "have",
    "had",
    "not",
    "but",
    "one",
    "all",
    "were",
    "when",
    "there",
    "an",
    "their",
    "been",
    "has",
    "more",
    "would",
    "who",
    "will",
    "its",
    "so",
    "no",
    "if",
    "out",
    "about",
    "up",
    "time",
    "into",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "these",
    "two",
    "may",
    "first",
    "then",
    "do",
    "any",
    "like",
    "my",
    "now",
    "over",
    "such",
    "our",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "model",
    "token",
    "language",
    "river",
    "mountain",
    "history",
    "science",
    "music",
    "garden",
    "window",
    "morning",
    "evening",
    "question",
    "answer",
]

CODE = [
    "def {n}(x, y=None):\n    if y is None:\n        return x * 2\n    return [v + y for v in x]\n\n",
    "class {N}:\n    def __init__(self, size: int) -> None:\n"
    "        self.size = size\n        self.items = {{}}\n\n",
    "for i in range(len(data)):\n    total += data[i] ** 2  # accumulate squares\n",
    'if __name__ == "__main__":\n    import sys\n    sys.exit(main(sys.argv[1:]))\n',
    "int {n}(const float *a, size_t n) {{\n\tfloat s = 0.0f;\n"
    "\tfor (size_t i = 0; i < n; i++) s += a[i];\n}}\n",
    '    result = {{"key": value, \'other\': [1, 2, 3], "nested": {{"a": None}}}}\n',
]

CJK_RANGES = [(0x4E00, 0x9FFF), (0x3041, 0x3096), (0x30A1, 0x30FA), (0xAC00, 0xD7A3)]
CJK_PUNCT = "、。！？「」（）：；"
EMOJI = [
    "\U0001F600", "\U0001F389", "\U0001F680", "\u2764\ufe0f", "\U0001F44D\U0001F3FD",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467", "\U0001F1EF\U0001F1F5", "\U0001F9D1\u200d\U0001F4BB",
    "\u2600\ufe0f", "\U0001F60A", "\U0001F914", "\U0001F525",
]  # fmt: skip


def _english(r: random.Random) -> str:
    sentences = []
    for _ in range(r.randint(2, 6)):
        words = [r.choice(WORDS) for _ in range(r.randint(5, 18))]
        words[0] = words[0].capitalize()
        sentences.append(" ".join(words) + r.choice([".", ".", ".", "?", "!", ","]))
    return " ".join(sentences) + "\n\n"


def _code(r: random.Random) -> str:
    name = r.choice(WORDS) + "_" + r.choice(WORDS)
    return r.choice(CODE).format(n=name, N=name.title().replace("_", ""))


def _cjk(r: random.Random) -> str:
    out = []
    for _ in range(r.randint(10, 60)):
        lo, hi = r.choice(CJK_RANGES)
        out.append(chr(r.randint(lo, hi)))
        if r.random() < 0.1:
            out.append(r.choice(CJK_PUNCT))
    return "".join(out) + "\n"


def _emoji(r: random.Random) -> str:
    return " ".join(r.choice(EMOJI) for _ in range(r.randint(1, 8))) + r.choice([" ", "\n", " ok "])


def _spaces(r: random.Random) -> str:
    return " " * r.randint(2, 200) + r.choice(["x", "\n", "\t"])


def make_corpus(n_bytes: int, seed: int = 0) -> str:
    """Mixed text of about n_bytes UTF-8 bytes (the same for a given seed)."""
    r = random.Random(seed)
    makers = [(_english, 50), (_code, 25), (_cjk, 15), (_emoji, 7), (_spaces, 3)]
    funcs = [f for f, _ in makers]
    weights = [w for _, w in makers]
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        piece = r.choices(funcs, weights)[0](r)
        parts.append(piece)
        size += len(piece.encode("utf-8"))
    return "".join(parts)


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench(tok: Tokenizer, text: str, repeat: int, label: str) -> None:
    data = text.encode("utf-8")
    ids = tok.encode(text)
    t_enc = _best(lambda: tok.encode(text), repeat)
    t_dec = _best(lambda: tok.decode(ids), repeat)
    mb = len(data) / 1e6
    print(
        f"{label:<22} {mb:6.2f} MB  {len(ids) / len(data):5.3f} tokens/byte  "
        f"encode {mb / t_enc:8.2f} MB/s  decode {mb / t_dec:8.2f} MB/s"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=4.0, help="corpus size in MB (default 4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best counts")
    args = parser.parse_args(argv)

    text = make_corpus(int(args.mb * 1e6), args.seed)
    small = text[: len(text) // 8]
    print(
        f"corpus: {len(text.encode('utf-8')) / 1e6:.2f} MB of mixed English/code/CJK/emoji, seed {args.seed}"
    )

    bench(ByteTokenizer(), text, args.repeat, "bytes")
    bench(NeoXTokenizer(), text, args.repeat, "20b (tokenizers)")
    world = WorldTokenizer()
    bench(world, text, args.repeat, f"world ({world.backend})")
    if world.backend != "python":
        bench(WorldTokenizer(backend="python"), small, 1, "world (python, 1/8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
