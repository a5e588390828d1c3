"""Misbehaving fuzz targets for tests/fuzzing/test_harness.py: the driver imports them as
``<path>/tests/fuzzing/planted.py:<name>`` in its child process (so it imports nothing from conftest)."""

from __future__ import annotations

import os
import signal
import time

from rwkv_ggml.errors import ModelFormatError


def planted_key_error(data: bytes) -> None:
    raise KeyError("planted")


def planted_refusal(data: bytes) -> None:
    raise ModelFormatError("planted: bad input refused the documented way")


def planted_segfault(data: bytes) -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def planted_hang(data: bytes) -> None:
    while True:
        time.sleep(0.05)


def planted_blow_up(data: bytes) -> None:
    bytearray(16 << 30)  # beyond the fuzzing process's address-space cap
