"""Content codings: which one a client's Accept-Encoding takes, and the encoders.

RFC 9110 §12.5.3: `gzip;q=0.8, br, *;q=0.1` — an encoding the header does not name is
acceptable only through `*`; q=0 refuses; `x-gzip` is gzip. No header (or an empty one)
means the client gets the representation as it is.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Protocol

import brotli
import zstandard

# Distinct Accept-Encoding values seen by one policy: browsers and HTTP libraries send a
# handful; a client sending random ones only makes the table start over.
_MEMO_LIMIT = 256
# Idle zstd compressors kept per policy and level (each holds ~1 MiB of context at level 3).
_IDLE_COMPRESSORS = 8


class Encoder(Protocol):
    """One response's compressor: bytes in, compressed bytes out (possibly none yet)."""

    def compress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes:
        """Everything given so far, decodable now (the stream goes on)."""
        ...

    def finish(self) -> bytes:
        """The end of the stream."""
        ...


class GzipEncoder:
    __slots__ = ("_stream",)

    def __init__(self, level: int, size: int | None) -> None:
        # wbits 16 + N: a gzip header and trailer around a deflate stream with a 2^N-byte
        # window. A body of known size needs no window (nor hash table) larger than
        # itself, and zlib clears both for every stream: for 4 KiB, 2^12 and a 2^12
        # hash table take ~40 µs where the defaults (32 KiB, 2^15) take ~90.
        window = 15 if size is None else min(15, max(9, size.bit_length()))
        self._stream = zlib.compressobj(level, zlib.DEFLATED, 16 + window, window - 7)

    def compress(self, data: bytes) -> bytes:
        return self._stream.compress(data)

    def flush(self) -> bytes:
        return self._stream.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._stream.flush(zlib.Z_FINISH)


class BrotliEncoder:
    __slots__ = ("_stream",)

    def __init__(self, quality: int) -> None:
        self._stream = brotli.Compressor(quality=quality)

    def compress(self, data: bytes) -> bytes:
        return bytes(self._stream.process(data))

    def flush(self) -> bytes:
        return bytes(self._stream.flush())

    def finish(self) -> bytes:
        return bytes(self._stream.finish())


class ZstdCompressors:
    """Idle compressors of one level, reused: making one (its context) costs ~10 µs, a
    third of compressing a 4 KiB answer. A compressor serves one stream at a time, so a
    response takes one and gives it back when its stream is finished; one abandoned
    (client gone, upstream failed) is simply not given back."""

    __slots__ = ("_idle", "_level")

    def __init__(self, level: int) -> None:
        self._level = level
        self._idle: list[zstandard.ZstdCompressor] = []

    def take(self) -> zstandard.ZstdCompressor:
        idle = self._idle
        return idle.pop() if idle else zstandard.ZstdCompressor(level=self._level)

    def give_back(self, compressor: zstandard.ZstdCompressor) -> None:
        if len(self._idle) < _IDLE_COMPRESSORS:
            self._idle.append(compressor)


class ZstdEncoder:
    __slots__ = ("_compressor", "_pool", "_stream")

    def __init__(self, pool: ZstdCompressors, size: int | None) -> None:
        self._pool = pool
        self._compressor = pool.take()
        # A known size lets zstd size its tables to the input: ~25 instead of ~45 µs for
        # 4 KiB at level 3. The upstream's Content-Length is exact (the parser holds it
        # to it; a short body aborts the response, never finishes this stream).
        self._stream = self._compressor.compressobj(size=-1 if size is None else size)

    def compress(self, data: bytes) -> bytes:
        return self._stream.compress(data)

    def flush(self) -> bytes:
        return self._stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def finish(self) -> bytes:
        tail = self._stream.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)
        self._pool.give_back(self._compressor)
        return tail


EncoderFactory = Callable[[int | None], Encoder]
"""Makes a fresh encoder for one response, given its length if known."""


def encoder_factory(name: str, level: int) -> EncoderFactory:
    """A maker of fresh encoders for one coding at one level."""
    if name == "gzip":
        return lambda size: GzipEncoder(level, size)
    if name == "br":
        return lambda size: BrotliEncoder(level)
    if name == "zstd":
        pool = ZstdCompressors(level)
        return lambda size: ZstdEncoder(pool, size)
    raise ValueError(f"unknown encoding {name!r}")


def parse_accept_encoding(header: bytes) -> tuple[dict[bytes, float], float | None]:
    """Each named coding's q-value, and that of `*` (None if absent). Items whose q-value
    is not a number from 0 to 1 are ignored, as a recipient of a bad list item may."""
    named: dict[bytes, float] = {}
    star: float | None = None
    for item in header.split(b","):
        coding, _, params = item.partition(b";")
        coding = coding.strip().lower()
        if not coding:
            continue
        quality = _quality(params)
        if quality is None:
            continue
        if coding == b"*":
            star = quality
        else:
            named[b"gzip" if coding == b"x-gzip" else coding] = quality
    return named, star


def _quality(params: bytes) -> float | None:
    quality = 1.0
    for param in params.split(b";"):
        key, _, value = param.partition(b"=")
        if key.strip().lower() != b"q":
            continue
        try:
            quality = float(value.strip())
        except ValueError:
            return None
        if not 0.0 <= quality <= 1.0:  # also refuses nan
            return None
    return quality


class Negotiator:
    """Chooses among the gateway's encodings (in its order of preference) for an
    Accept-Encoding value: the highest q-value wins, a tie goes to the gateway's earlier
    choice. Results are remembered per distinct header value."""

    __slots__ = ("_memo", "_offered")

    def __init__(self, offered: tuple[str, ...]) -> None:
        self._offered = tuple(name.encode() for name in offered)
        self._memo: dict[bytes, str | None] = {}

    def choose(self, header: bytes | None) -> str | None:
        """The encoding to use, or None: send the representation as it is."""
        if not header:
            return None
        memo = self._memo
        if header in memo:
            return memo[header]
        chosen = self._choose(header)
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        memo[header] = chosen
        return chosen

    def _choose(self, header: bytes) -> str | None:
        named, star = parse_accept_encoding(header)
        best: bytes | None = None
        best_quality = 0.0
        for coding in self._offered:
            quality = named.get(coding, star if star is not None else 0.0)
            if quality > best_quality:
                best, best_quality = coding, quality
        return best.decode() if best is not None else None
