"""Tokenizers for RWKV models: GPT-NeoX-20B BPE, RWKV World, and raw bytes.

Which one a model needs follows from its vocabulary size (tokenizers.md):

    50277 -> "20b"   GPT-NeoX-20B byte-level BPE (RWKV-4 Pile / Raven)
    65536 -> "world" RWKV World greedy longest match (RWKV-4 World, RWKV-5/6/7)
      256 -> "bytes" token id = byte value (rwkv.cpp's tiny test models, our default model)

``Tokenizer.for_model(model)`` picks it; ``kind=`` overrides. All three share one small
interface (:class:`Tokenizer`): text and bytes in both directions, plus an
:class:`IncrementalDecoder` for streaming generation, because a single token may end in the
middle of a multi-byte UTF-8 character and a streaming front end must not print half of it.

Both vocabulary files ship in ``rwkv_ggml/data`` (origin and licences in data/README.md).
The World vocabulary is parsed without ``eval`` (tokenizers.md §2.3). World encoding runs in the
C trie of the compiled core (csrc/tokenizer/world_trie.c) when it is built, and otherwise in a
pure-Python trie that implements the same greedy walk; the Python one is also the reference
the tests compare the C one against.

The package, by responsibility: ``base`` (the interface, id checks, the byte tokenizer and the
choice by vocabulary size), ``streaming`` (the UTF-8-safe incremental decoder), ``neox``,
``world`` (vocabulary parser and tokenizer) and ``_trie`` (the C and Python tries World encodes
with). Everything public is importable from ``rwkv_ggml.tokenizer`` itself.
"""

from __future__ import annotations

from .base import (
    DATA_DIR,
    KINDS,
    KNOWN_VOCAB_SIZES,
    NEOX_VOCAB_FILE,
    WORLD_VOCAB_FILE,
    ByteTokenizer,
    IdsLike,
    Tokenizer,
)
from .neox import NeoXTokenizer
from .streaming import IncrementalDecoder
from .world import WorldTokenizer, parse_world_literal, parse_world_vocab

__all__ = [
    "DATA_DIR",
    "KINDS",
    "KNOWN_VOCAB_SIZES",
    "NEOX_VOCAB_FILE",
    "WORLD_VOCAB_FILE",
    "ByteTokenizer",
    "IdsLike",
    "IncrementalDecoder",
    "NeoXTokenizer",
    "Tokenizer",
    "WorldTokenizer",
    "parse_world_literal",
    "parse_world_vocab",
]
