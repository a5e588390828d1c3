"""Streaming decode: token ids in, text out, never half a UTF-8 character.

A token boundary may fall inside a multi-byte character (the World and byte-level tokenizers split
on bytes), so a streaming front end must hold back an unfinished sequence, but only while it can
still become valid. The rules below follow Unicode's well-formed byte sequences (Table 3-7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import IdsLike, Tokenizer


# Allowed range of the second byte of a UTF-8 sequence, by lead byte (Unicode Table 3-7). The
# narrow ranges after E0/ED/F0/F4 exclude overlong forms, surrogates and code points > U+10FFFF.
def _second_byte_range(lead: int) -> tuple[int, int]:
    if lead == 0xE0:
        return 0xA0, 0xBF
    if lead == 0xED:
        return 0x80, 0x9F
    if lead == 0xF0:
        return 0x90, 0xBF
    if lead == 0xF4:
        return 0x80, 0x8F
    return 0x80, 0xBF


def _sequence_length(lead: int) -> int:
    """Length of the well-formed sequence a lead byte starts, 0 if it cannot start one."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _incomplete_tail(buf: bytes) -> int:
    """How many trailing bytes of buf are the start of a well-formed but unfinished character.

    Only those can still become valid, so only those are worth holding back.
    """
    n = len(buf)
    for k in range(1, min(3, n) + 1):
        lead = buf[n - k]
        if 0x80 <= lead <= 0xBF:
            continue  # a continuation byte: the lead is further back
        need = _sequence_length(lead)
        if need <= k:
            return 0  # ASCII, an invalid lead, or a sequence that is already complete
        if k >= 2:
            lo, hi = _second_byte_range(lead)
            if not lo <= buf[n - k + 1] <= hi:
                return 0
        return k
    return 0


class IncrementalDecoder:
    """Turns a stream of token ids into text without ever emitting a broken character.

    A token boundary may fall inside a multi-byte UTF-8 character (World and byte-level
    tokenizers split on bytes). ``feed`` returns only complete characters and holds back a
    trailing sequence only while it can still become a valid character (at most 3 bytes).
    Bytes that can never become valid (0xFF, a lone continuation byte, a lead byte followed by
    a byte it does not allow, the start of a surrogate) come out at once as U+FFFD instead of
    being held. ``flush`` ends the stream: what is still held comes out with U+FFFD.

    The concatenation of all ``feed`` results plus ``flush`` equals
    ``tokenizer.decode(all_ids)``: a held tail always starts with a lead byte, so no sequence
    can run from the emitted part into it, and replacement follows the same "maximal subpart"
    rule as ``bytes.decode(errors='replace')``. (Python's own incremental UTF-8 decoder is
    not used because it keeps some never-valid prefixes such as ED A0 until more bytes come.)
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._held = b""

    def feed(self, ids: IdsLike) -> str:
        """Decode more ids; return the text that is now complete."""
        return self.feed_bytes(self.tokenizer.decode_bytes(ids))

    def feed_bytes(self, data: bytes) -> str:
        """Like feed, for raw bytes."""
        buf = self._held + bytes(data)
        keep = _incomplete_tail(buf)
        self._held = buf[len(buf) - keep :] if keep else b""
        return buf[: len(buf) - keep].decode("utf-8", errors="replace")

    def flush(self) -> str:
        """End of stream: return whatever is held back, with U+FFFD for an unfinished sequence."""
        text = self._held.decode("utf-8", errors="replace")
        self._held = b""
        return text

    def reset(self) -> None:
        """Drop held-back bytes without emitting them."""
        self._held = b""

    @property
    def pending(self) -> bytes:
        """The bytes currently held back (an unfinished UTF-8 sequence, at most 3 bytes)."""
        return self._held
