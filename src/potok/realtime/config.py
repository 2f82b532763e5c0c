"""The `realtime:` section: WebSocket endpoint, channel rules, event bus, history, limits."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from potok.config.base import ConfigModel
from potok.config.units import ByteSize, Duration
from potok.identity.jwt_config import JwtTrustConfig, check_cookie_name

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig

_QUERY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_SUBJECT_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_STREAM = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Channel patterns: channel characters, plus {sub}/{org} placeholders and * wildcards.
_PATTERN = re.compile(r"^([A-Za-z0-9_:@=+.*-]|\{sub\}|\{org\})+$")


class RealtimeAuthConfig(JwtTrustConfig):
    """Who may open a realtime connection: JWTs from the token service or trusted issuers."""

    timeout: Duration = Field(
        10.0,
        description=(
            "A connection that has not authenticated this long after the handshake is closed "
            "with code 4401."
        ),
    )
    query: str | None = Field(
        "token",
        description=(
            "Query parameter that may carry the token at connect time (browsers cannot set "
            "headers on a WebSocket); null: not read from the query."
        ),
    )
    cookie: str | None = Field(
        None, description="Cookie that may carry the token at connect time; null: not read."
    )

    @field_validator("cookie")
    @classmethod
    def _cookie(cls, value: str | None) -> str | None:
        return check_cookie_name(value)

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None and not _QUERY.match(value):
            raise ValueError("1-64 of letters, digits, '_', '.', '-'")
        return value


class ChannelRuleConfig(ConfigModel):
    """Who may use the channels whose names match `pattern` (the first matching rule decides)."""

    pattern: str = Field(
        description=(
            "Channel name pattern: `{org}` must equal the token's org, `{sub}` its subject; "
            "`*` matches one ':'-separated segment, or, as the last character, the whole rest "
            "(e.g. 'org:{org}:tasks', 'user:{sub}:notifications', 'public:*')."
        )
    )
    subscribe: bool = Field(True, description="Matching callers may subscribe.")
    publish: bool = Field(False, description="Matching callers may publish with a `message` frame.")
    roles: tuple[str, ...] = Field(
        (), description="The caller needs one of these roles; empty: any authenticated caller."
    )

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not _PATTERN.match(value) or len(value) > 200:
            raise ValueError(
                "a pattern is channel characters (letters, digits, _ : @ = + . -), '*' and the "
                "placeholders {sub} and {org}"
            )
        return value


def _default_channels() -> tuple[ChannelRuleConfig, ...]:
    return (
        ChannelRuleConfig(pattern="org:{org}:*"),
        ChannelRuleConfig(pattern="user:{sub}:*"),
        ChannelRuleConfig(pattern="public:*"),
    )


class NatsBusConfig(ConfigModel):
    """NATS with JetStream: one stream keeps the history and drops duplicates by event id."""

    servers: tuple[str, ...] = Field(
        ("nats://127.0.0.1:4222",), description="NATS server URLs (nats:// or tls://)."
    )
    stream: str = Field("POTOK_EVENTS", description="JetStream stream holding the events.")
    storage: Literal["file", "memory"] = Field(
        "file", description="Where JetStream keeps the stream."
    )
    replicas: int = Field(1, ge=1, le=5, description="Stream replicas (clustered NATS).")
    connect_timeout: Duration = Field(2.0, description="Opening a connection to NATS.")
    publish_timeout: Duration = Field(2.0, description="Longest wait for a JetStream ack.")

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one server")
        for url in value:
            if not url.startswith(("nats://", "tls://", "ws://", "wss://")):
                raise ValueError(f"{url!r}: use nats:// or tls://")
        return value

    @field_validator("stream")
    @classmethod
    def _stream(cls, value: str) -> str:
        if not _STREAM.match(value):
            raise ValueError("1-64 of letters, digits, '_' and '-'")
        return value


class RedisBusConfig(ConfigModel):
    """Redis pub/sub for the live events, a capped stream per channel for the history."""

    url: str | None = Field(
        None, description="redis:// URL; null: the top-level `redis:` section's URL."
    )
    timeout: Duration = Field(2.0, description="Longest wait for one publish or history read.")


class BusConfig(ConfigModel):
    """How events reach every gateway instance."""

    backend: Literal["memory", "redis", "nats"] = Field(
        "memory",
        description=(
            "'memory': in this process only (one instance, one worker); 'redis': Redis "
            "pub/sub; 'nats': NATS JetStream."
        ),
    )
    subject_prefix: str = Field(
        "potok.events",
        description=(
            "Events of channel C travel on subject (NATS) or pub/sub channel (Redis) `<prefix>.C`."
        ),
    )
    nats: NatsBusConfig = Field(
        default_factory=NatsBusConfig, description="NATS settings (backend 'nats')."
    )
    redis: RedisBusConfig = Field(
        default_factory=RedisBusConfig, description="Redis settings (backend 'redis')."
    )
    reconnect_interval: Duration = Field(
        1.0, description="Wait between attempts to reach the bus after it went away."
    )

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _SUBJECT_PREFIX.match(value) or len(value) > 64:
            raise ValueError("dot-separated tokens of letters, digits, '_' and '-'")
        return value


class HistoryConfig(ConfigModel):
    """Per channel, the recent events kept for clients that resubscribe with `since`."""

    size: int = Field(100, ge=0, le=100_000, description="Events kept per channel (0: no history).")
    ttl: Duration = Field(300.0, description="Events older than this are dropped.")
    max_channels: int = Field(
        10_000,
        ge=1,
        description="Channels whose history the memory bus keeps (least recently used go).",
    )


class LimitsConfig(ConfigModel):
    """Bounds per connection: what one client can make the gateway hold or do."""

    send_buffer: ByteSize = Field(
        1024 * 1024,
        description=(
            "Bytes waiting to be sent to one client; a client that lets more pile up is "
            "disconnected with code 1013 (slow consumer)."
        ),
    )
    max_message_bytes: ByteSize = Field(
        65536, description="Largest message a client may send (bigger: close 1009)."
    )
    max_subscriptions: int = Field(
        100, ge=1, description="Channels one connection may subscribe to at once."
    )
    ping_interval: Duration = Field(
        25.0, description="The server pings every connection this often."
    )
    ping_timeout: Duration = Field(
        20.0,
        description="A peer silent for ping_interval + ping_timeout is dead and dropped.",
    )
    close_timeout: Duration = Field(
        5.0, description="After a close frame, the peer has this long to answer before a drop."
    )


class EventKeyConfig(ConfigModel):
    """A service key for `POST /api/v1/events`, given in the config (use ${VAR} or enc:v1:)."""

    name: str = Field(description="Who uses the key (logged with each publish).")
    key: str = Field(description="The key, at least 24 characters.")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if len(value) < 24:
            raise ValueError("a service key has at least 24 characters")
        return value


class EventsEndpointConfig(ConfigModel):
    """`POST /api/v1/events`: back-end services publish over HTTP with a service API key."""

    enabled: bool = Field(True, description="Serve the endpoint.")
    header: str = Field("X-API-Key", description="Header carrying the key.")
    keys: tuple[EventKeyConfig, ...] = Field(
        (), description="Keys accepted in addition to database keys with `scope`."
    )
    scope: str = Field(
        "events:publish",
        description="Scope a key made with `potok keys create` needs to publish.",
    )
    max_batch: int = Field(1000, ge=1, description="Most events in one request.")


class SocketIoConfig(ConfigModel):
    """Socket.IO at /api/v1/socket.io (python-socketio), with the same channel rules."""

    enabled: bool = Field(True, description="Serve Socket.IO.")
    cors_allowed_origins: tuple[str, ...] = Field(
        (), description="Origins allowed to connect from a browser; empty: same origin only."
    )


class RealtimeConfig(ConfigModel):
    """Real-time delivery: /api/v1/ws, Socket.IO, channels, event bus, history."""

    auth: RealtimeAuthConfig = Field(description="How connections authenticate.")
    channels: tuple[ChannelRuleConfig, ...] = Field(
        default_factory=_default_channels,
        description="Channel rules, first match wins; a channel no rule matches is refused.",
    )
    bus: BusConfig = Field(default_factory=BusConfig, description="The event bus.")
    history: HistoryConfig = Field(default_factory=HistoryConfig, description="Event history.")
    dedup_window: Duration = Field(
        120.0, description="An event id seen again within this long is dropped."
    )
    dedup_size: int = Field(
        100_000, ge=1, description="Most event ids remembered for de-duplication."
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Per-connection bounds.")
    allowed_origins: tuple[str, ...] = Field(
        (),
        description=(
            "Browser origins allowed to open /api/v1/ws (e.g. 'https://app.example.com'); "
            "empty: any. Set it when tokens travel in a cookie, against cross-site WebSocket "
            "hijacking."
        ),
    )
    events: EventsEndpointConfig = Field(
        default_factory=EventsEndpointConfig, description="The HTTP publish endpoint."
    )
    socketio: SocketIoConfig = Field(default_factory=SocketIoConfig, description="Socket.IO.")


def realtime_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    """Checks that need more of the file than the `realtime:` block."""
    realtime = config.realtime
    if realtime is None:
        return []
    problems: list[tuple[str, str]] = []
    bus = realtime.bus
    if bus.backend == "memory" and config.server.workers > 1:
        problems.append(
            (
                "realtime.bus.backend",
                f"the memory bus delivers inside one process, but there are "
                f"{config.server.workers} workers; use 'redis' or 'nats', or one worker",
            )
        )
    if bus.backend == "redis" and bus.redis.url is None and config.redis is None:
        problems.append(("realtime.bus.redis.url", "give a URL or the top-level `redis:` section"))
    if realtime.auth.token_service and not config.auth.token_service.enabled:
        problems.append(("realtime.auth.token_service", "needs auth.token_service.enabled: true"))
    return problems
