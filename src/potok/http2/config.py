"""`server.http2`: whether clients may speak HTTP/2, and the limits they are held to."""

from __future__ import annotations

from pydantic import Field

from potok.config.base import ConfigModel
from potok.config.units import ByteSize, Duration
from potok.http.settings import Http2Settings

# RFC 9113 6.5.2: the bounds a SETTINGS value must stay within.
_MIN_FRAME, _MAX_FRAME = 16_384, 16_777_215
_MAX_WINDOW = 2**31 - 1


class Http2FloodLimits(ConfigModel):
    """Frames a client may send per window before the connection is closed with GOAWAY
    ENHANCE_YOUR_CALM: each costs the gateway work while giving it nothing to answer."""

    window: Duration = Field(10.0, description="The counting window.")
    resets: int = Field(
        200,
        ge=1,
        description=(
            "Streams the client cancels (RST_STREAM) per window: the rapid reset attack "
            "(CVE-2023-44487) opens and cancels streams to make the server start work for nothing."
        ),
    )
    settings: int = Field(
        100, ge=1, description="SETTINGS frames per window (each must be acknowledged)."
    )
    pings: int = Field(100, ge=1, description="PING frames per window (each must be answered).")
    empty_data: int = Field(
        100, ge=1, description="Empty DATA frames that do not end their stream, per window."
    )


class Http2Config(ConfigModel):
    """HTTP/2 to clients: prior-knowledge h2c on plain listeners, ALPN `h2` on TLS ones."""

    enabled: bool = Field(
        True,
        description=(
            "Accept HTTP/2: a plain connection that opens with the HTTP/2 preface switches to "
            "it (h2c with prior knowledge; `Upgrade: h2c` is not offered)."
        ),
    )
    max_concurrent_streams: int = Field(
        100, ge=1, le=10_000, description="Streams a client may have open at once on a connection."
    )
    max_header_list_size: ByteSize = Field(
        32_768,
        description=(
            "Largest request header list (decoded, RFC 9113 6.5.2 accounting); also the bound "
            "on a header block's encoded size across CONTINUATION frames. Past it: GOAWAY."
        ),
    )
    max_frame_size: ByteSize = Field(
        16_384,
        ge=_MIN_FRAME,
        le=_MAX_FRAME,
        description="Largest frame payload the client may send.",
    )
    initial_window_size: ByteSize = Field(
        65_535,
        ge=1,
        le=_MAX_WINDOW,
        description=(
            "Request body bytes a stream may send before the gateway acknowledges them; "
            "acknowledged only as the upstream takes them (back-pressure)."
        ),
    )
    header_table_size: ByteSize = Field(
        4096, le=65_536, description="HPACK dynamic table the client's encoder may use."
    )
    stall_timeout: Duration = Field(
        30.0,
        description=(
            "A stream whose response cannot move because the client does not open its flow "
            "control window is reset after this long (its upstream call cancelled)."
        ),
    )
    floods: Http2FloodLimits = Field(
        default_factory=Http2FloodLimits, description="Bounds on frames that cost work for nothing."
    )


def http2_settings(config: Http2Config) -> Http2Settings | None:
    """The plain numbers the connections read; None when HTTP/2 is off."""
    if not config.enabled:
        return None
    floods = config.floods
    return Http2Settings(
        max_concurrent_streams=config.max_concurrent_streams,
        max_header_list_size=config.max_header_list_size,
        max_frame_size=config.max_frame_size,
        initial_window_size=config.initial_window_size,
        header_table_size=config.header_table_size,
        stall_timeout=config.stall_timeout,
        flood_window=floods.window,
        max_resets=floods.resets,
        max_settings=floods.settings,
        max_pings=floods.pings,
        max_empty_data=floods.empty_data,
    )
