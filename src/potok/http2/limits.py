"""Defences of an HTTP/2 connection: frames that cost work for nothing are counted per
window, and a header block is bounded while it is still arriving in CONTINUATION frames."""

from __future__ import annotations

from collections.abc import Callable

from h2.exceptions import DenialOfServiceError
from h2.frame_buffer import FrameBuffer
from hyperframe.frame import ContinuationFrame, Frame, HeadersFrame


class FloodBudget:
    """At most `limit` events per fixed `window` seconds (a client over it is flooding).

    A fixed window, not a sliding one: two counters and a comparison per event. A client
    may send up to twice the limit across a window boundary, which bounds the work just
    as well."""

    __slots__ = ("_clock", "_count", "_ends", "limit", "window")

    def __init__(self, limit: int, window: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._count = 0
        self._ends = 0.0

    def spend(self) -> bool:
        """Count one event; False once the window's budget is exceeded."""
        now = self._clock()
        if now >= self._ends:
            self._ends = now + self.window
            self._count = 0
        self._count += 1
        return self._count <= self.limit


class BoundedFrameBuffer(FrameBuffer):
    """h2's frame buffer, with the header block's encoded size bounded across its
    CONTINUATION frames (CVE-2024-27316: a block that never ends, held in memory).

    h2 bounds the number of CONTINUATION frames (64) but not their size; with 16 MiB
    frames that is a gigabyte. Past `max_block` bytes this raises DenialOfServiceError,
    which h2 turns into GOAWAY ENHANCE_YOUR_CALM."""

    def __init__(self, max_block: int) -> None:
        super().__init__(server=True)
        self.max_block = max_block
        self._block = 0

    def _update_header_buffer(self, f: Frame | None) -> Frame | None:
        if isinstance(f, (HeadersFrame, ContinuationFrame)):
            if isinstance(f, HeadersFrame):
                self._block = 0
            self._block += len(f.data)
            if self._block > self.max_block:
                msg = f"header block larger than {self.max_block} bytes"
                raise DenialOfServiceError(msg)
        return super()._update_header_buffer(f)
