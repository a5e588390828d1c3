"""``python -m rwkv_ggml``: the same command line as ``rwkv-ggml`` (see rwkv_ggml/cli/)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
