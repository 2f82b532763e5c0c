"""The `cache` policy: a response filter that answers from its store or stores what streams.

Per request, as the upstream stage starts (every request hook has passed: the caller
is authenticated and authorized), the factory looks the request up in the memory
store. A usable entry is sent through the filters nearer the client and the factory
returns `ANSWERED`: no upstream call. A stale entry with a validator turns the request
into a conditional one (`If-None-Match`/`If-Modified-Since`); its 304 freshens the
entry, which is then served. Otherwise a `StoreFilter` tees the body (bounded) and
stores it when the response ends complete and storable. Unsafe methods get an
`InvalidateFilter` that forgets the URI (and same-origin `Location`/`Content-Location`)
after a 2xx or 3xx.

It sits in the CACHE stage, behind `compress` (EDGE): it stores the identity-encoded
representation and every answer, a hit included, is encoded per client by compress.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from potok.http.http11 import HOP_BY_HOP
from potok.policies.base import SUSPENDED, BuildContext, Policy, RequestOutcome, Stage
from potok.policies.cache import cache_control
from potok.policies.cache.cache_control import Directives, seconds
from potok.policies.cache.config import CacheConfig
from potok.policies.cache.freshness import (
    HEURISTIC_STATUSES,
    forbids_stale,
    http_date,
    initial_age,
    lifetime,
    stale_window,
)
from potok.policies.cache.registry import cache_registry
from potok.policies.cache.serve import send_stored
from potok.policies.cache.singleflight import CONTEXT_KEY, LEAD_KEY, Fill, Fills, Lead
from potok.policies.cache.store_memory import MemoryStore
from potok.policies.cache.store_redis import LockWait, RedisStore
from potok.policies.cache.stored import (
    StoredResponse,
    private_fields,
    vary_key,
    vary_names,
)
from potok.policies.response import ANSWERED, Answered, ResponseFilter, ResponseSink
from potok.redis_clients import redis_client

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from potok.exchange import Exchange
    from potok.observability.metrics import MetricsRegistry

Headers = list[tuple[bytes, bytes]]

_LOOKED_UP = frozenset({b"GET", b"HEAD"})
_SAFE = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
_EMPTY: Directives = {}
# Never stored (RFC 9111 §3.1), or set per answer by the cache when it sends one.
_NOT_STORED = HOP_BY_HOP | {b"content-length", b"age"}
# Statuses whose meaning the cache understands (for `must-understand`, RFC 9111 §5.2.2.3).
_UNDERSTOOD = frozenset(
    {
        200,
        203,
        204,
        300,
        301,
        302,
        303,
        307,
        308,
        400,
        403,
        404,
        405,
        410,
        414,
        500,
        501,
        502,
        503,
        504,
    }
)
_CONDITIONAL = frozenset({b"if-none-match", b"if-modified-since", b"range", b"if-range"})
_RESULTS = ("hit", "miss", "stale", "bypass", "revalidated")
# Verdicts on a stored entry for one request.
FRESH, STALE_OK, REVALIDATE, STALE_REFRESH = 0, 1, 2, 3
_STALE_SERVED = frozenset({STALE_OK, STALE_REFRESH})
# A background refresh not finished after this long is taken for lost (its client's
# connection went away and the filter with it): another request may start one.
_REFRESH_FOR = 30.0
_GATEWAY_SET = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id",
     b"forwarded", b"x-real-ip"}
)  # fmt: skip
_REFRESHING_LIMIT = 4096


class Cache:
    """One route's cache: config decided at load, its store, its counters."""

    __slots__ = (
        "config",
        "counts",
        "fills",
        "lock_timeouts",
        "lock_waits",
        "name",
        "redis",
        "refreshing",
        "route",
        "store",
        "tags",
        "targets",
        "unkeyable",
    )

    def __init__(
        self,
        config: CacheConfig,
        store: MemoryStore,
        route: str,
        metrics: MetricsRegistry | None = None,
        redis: RedisStore | None = None,
        *,
        gateway_set: frozenset[bytes] = frozenset(),
    ) -> None:
        self.config = config
        # Request headers only the gateway sets upstream (identity, X-Forwarded-*...): the
        # client's copies are dropped, so a Vary naming one cannot be told apart here.
        self.unkeyable = _GATEWAY_SET | gateway_set
        self.store = store
        self.redis = redis
        self.route = route
        self.name = config.status_name.encode()
        self.targets = tuple(name.lower().encode() for name in config.targets)
        self.tags = config.tags
        self.fills = Fills(config.lock_timeout)
        # Cells of cache_requests_total (or plain cells outside a worker): the hot path
        # adds to them without hashing labels.
        if metrics is not None:
            requests = metrics.counter(
                "cache_requests_total",
                "Requests to a cached route, by result (hit, miss, stale, bypass, revalidated).",
                ("route", "result"),
            )
            self.counts = {result: requests.cell((route, result)) for result in _RESULTS}
            evictions = metrics.counter(
                "cache_evictions_total", "Responses evicted to stay within max_bytes.", ("route",)
            ).cell((route,))

            def evicted(count: int) -> None:
                evictions[0] += count

            store.on_evict = evicted
        else:
            self.counts = {result: [0.0] for result in _RESULTS}
        # Single-flight across instances (Redis store): waits for another's fill lock,
        # and those that reached lock_timeout and went upstream.
        self.lock_waits: list[float] = [0.0]
        self.lock_timeouts: list[float] = [0.0]
        if metrics is not None and config.store == "redis":
            self.lock_waits = metrics.counter(
                "cache_lock_waits_total",
                "Misses that waited for another worker's or instance's fill (Redis lock).",
                ("route",),
            ).cell((route,))
            self.lock_timeouts = metrics.counter(
                "cache_lock_timeouts_total",
                "Lock waits that reached lock_timeout and went to the upstream themselves.",
                ("route",),
            ).cell((route,))
        # Keys with a stale-while-revalidate refresh in flight, and since when.
        self.refreshing: dict[bytes, float] = {}

    # Keys -----------------------------------------------------------------------------

    def key(self, exchange: Exchange) -> bytes:
        """The primary key: host and target URI (query sorted if configured). The method
        is not in it: HEAD is answered from GET's entry, and only GET stores."""
        query = exchange.query
        if self.config.sort_query and query:
            query = b"?" + b"&".join(sorted(query[1:].split(b"&")))
        return exchange.host.lower() + b" " + exchange.path + query

    def identity(self, exchange: Exchange) -> str | None:
        if not self.config.per_identity or exchange.identity is None:
            return None
        principal = exchange.identity
        return f"{principal.kind}:{principal.subject}"

    # The store: memory or Redis -----------------------------------------------------

    def select(
        self, exchange: Exchange, key: bytes, identity: str | None
    ) -> tuple[StoredResponse | None, bool]:
        headers = exchange.headers
        if self.redis is None:
            return self.store.select(key, lambda names: vary_key(names, headers), identity)
        context = exchange.context
        variants: list[StoredResponse] = (context or {}).get(CONTEXT_KEY) or []
        for entry in variants:
            names = tuple(name for name, _ in entry.vary)
            if entry.identity == identity and entry.vary == vary_key(names, headers):
                return entry, True
        return None, bool(variants)

    def put(self, key: bytes, entry: StoredResponse, unlock: bytes | None = None) -> None:
        """Store `entry`; with the Redis store, `unlock` (a fill lock's token) is
        released once it is written, or now if it is not stored."""
        redis = self.redis
        if redis is not None:
            if not redis.put(key, entry, unlock) and unlock is not None:
                redis.release(key, unlock)
        else:
            self.store.put(key, entry)

    def replace(self, key: bytes, old: StoredResponse, new: StoredResponse) -> None:
        if self.redis is not None:
            self.redis.put(key, new)
        else:
            self.store.replace(key, old, new)

    def remove(self, key: bytes) -> None:
        if self.redis is not None:
            self.redis.remove(key)
        else:
            self.store.remove(key)

    async def purge(
        self, *, key: str | None = None, prefix: str | None = None, tag: str | None = None
    ) -> int:
        """Forget entries under an exact key (`host path?query`), a key prefix, a tag,
        or all of them."""
        if self.redis is not None:
            return await self.redis.purge(key=key, prefix=prefix, tag=tag)
        store = self.store
        if key is not None:
            return store.remove(key.encode("latin-1"))
        if prefix is not None:
            start = prefix.encode("latin-1")
            return store.remove_where(lambda k, _: not k.startswith(start))
        if tag is not None:
            return store.remove_where(lambda _, entry: tag not in entry.tags)
        return store.clear()

    # Per request ---

    def hold(self, exchange: Exchange) -> RequestOutcome:
        """The request hook: a GET whose key another request is filling waits for it;
        with Redis, the key's variants are fetched here (the factory cannot wait), and
        a GET that finds none it can use takes the key's fill lock or waits for its
        holder (single-flight across workers and instances)."""
        method = exchange.method
        if method not in _LOOKED_UP:
            return None
        key = self.key(exchange)
        if method == b"GET" and self.fills.wait(key, exchange):
            return SUSPENDED
        redis = self.redis
        if redis is not None and redis.available:
            loop = exchange.connection.loop
            # This worker's other requests for the key wait behind this one from now on.
            fill = self.fills.start(key, loop) if method == b"GET" else None
            return loop.create_task(self._fetch(exchange, key, fill))
        return None

    async def _fetch(self, exchange: Exchange, key: bytes, fill: Fill | None) -> None:
        redis = self.redis
        assert redis is not None
        if exchange.context is None:
            exchange.context = {}
        context = exchange.context
        lead = Lead(self.fills, key, fill, redis) if fill is not None else None
        try:
            variants = await redis.variants(key)
            if variants:
                context[CONTEXT_KEY] = variants
            if lead is None:
                return
            context[LEAD_KEY] = lead
            if (variants and self._selects(exchange, variants)) or not redis.available:
                return
            try:
                lead.lock = await redis.lock(key, self.config.lock_timeout)
            except Exception:  # Redis failed (logged, backed off): the upstream answers
                return
            if lead.lock is None:
                await self._wait_fill(exchange, key, context)
        except asyncio.CancelledError:
            # The request went away while it waited: its fill and lock go with it.
            context.pop(LEAD_KEY, None)
            if lead is not None:
                lead.settle([])
            raise

    async def _wait_fill(self, exchange: Exchange, key: bytes, context: dict[str, object]) -> None:
        """Another worker or instance holds the fill lock: wait for its entry, at most
        `lock_timeout`; then (or when it gave up without one) the upstream answers."""
        redis = self.redis
        assert redis is not None
        self.lock_waits[0] += 1
        deadline = time.monotonic() + self.config.lock_timeout
        outcome, variants = await redis.wait_fill(
            key, deadline, lambda found: self._selects(exchange, found)
        )
        if outcome == LockWait.TIMEOUT:
            self.lock_timeouts[0] += 1
        if variants:
            context[CONTEXT_KEY] = variants

    def _selects(self, exchange: Exchange, variants: list[StoredResponse]) -> bool:
        """Whether one of `variants` is for this request (its caller, its Vary values)."""
        identity = self.identity(exchange)
        headers = exchange.headers
        return any(
            entry.identity == identity
            and entry.vary == vary_key(tuple(name for name, _ in entry.vary), headers)
            for entry in variants
        )

    def open(self, exchange: Exchange, downstream: ResponseSink) -> ResponseSink | Answered | None:
        method = exchange.method
        if method not in _LOOKED_UP:
            if method in _SAFE:
                return None
            return InvalidateFilter(downstream, self, exchange)
        raw_cc = exchange.header(b"cache-control")
        request_cc = cache_control.parse(raw_cc) if raw_cc is not None else _EMPTY
        now = time.time()
        identity = self.identity(exchange)
        key = self.key(exchange)
        entry, known = self.select(exchange, key, identity)
        forward = b"vary-miss" if known else b"uri-miss"
        context = exchange.context
        lead: Lead | None = None
        if self.redis is not None and context is not None:
            lead = context.pop(LEAD_KEY, None)
        if entry is not None:
            if lead is not None:
                # Not going upstream to store: this worker's waiters take what was found.
                lead.settle(context.get(CONTEXT_KEY) or [] if context is not None else [])
                lead = None
            verdict = judge(entry, request_cc, now)
            if verdict == FRESH:
                self.counts["hit"][0] += 1
                self._send(exchange, downstream, entry, now=now, detail=b"hit", x_cache=b"HIT")
                return ANSWERED
            if verdict in _STALE_SERVED:
                self.counts["stale"][0] += 1
                self._send(exchange, downstream, entry, now=now, detail=b"hit", x_cache=b"STALE")
                if verdict == STALE_REFRESH and method == b"GET" and self._may_refresh(key, now):
                    return self._revalidate(
                        exchange, _DISCARD, key, entry, forward=b"stale", now=now, background=True
                    )
                return ANSWERED
            forward = b"request" if _asks_validation(request_cc) else b"stale"
            if b"only-if-cached" in request_cc:  # never forwarded (§5.2.1.7)
                return self._not_cached(exchange)
            if entry.has_validator:
                return self._revalidate(exchange, downstream, key, entry, forward=forward, now=now)
            stale = entry
        else:
            stale = None
        if b"only-if-cached" in request_cc:
            if lead is not None:
                lead.settle([])
            return self._not_cached(exchange)
        lock: bytes | None = None
        if lead is not None:
            fill, lock = lead.take()
        else:
            fill = self.fills.start(key, exchange.connection.loop) if method == b"GET" else None
        return StoreFilter(
            downstream,
            self,
            exchange,
            key=key,
            forward=forward,
            revalidating=None,
            request_cc=request_cc,
            request_time=now,
            stale=stale,
            fill=fill,
            lock=lock,
        )

    def _not_cached(self, exchange: Exchange) -> Answered:
        self.counts["miss"][0] += 1
        exchange.problem(504, "only-if-cached: no stored response to use")
        return ANSWERED

    def _may_refresh(self, key: bytes, now: float) -> bool:
        """Whether this request starts the one background refresh of `key`."""
        refreshing = self.refreshing
        since = refreshing.get(key)
        if since is not None and now - since < _REFRESH_FOR:
            return False
        if len(refreshing) >= _REFRESHING_LIMIT:
            for old in [k for k, t in refreshing.items() if now - t >= _REFRESH_FOR]:
                del refreshing[old]
            if len(refreshing) >= _REFRESHING_LIMIT:
                return False
        refreshing[key] = now
        return True

    def _send(
        self,
        exchange: Exchange,
        downstream: ResponseSink,
        entry: StoredResponse,
        *,
        now: float,
        detail: bytes,
        x_cache: bytes,
    ) -> None:
        exchange.body.detach()
        status = self.name + b"; " + detail + b"; ttl=%d" % int(entry.ttl(now))
        extra = [(b"Cache-Status", status)]
        if self.config.x_cache:
            extra.append((b"X-Cache", x_cache))
        send_stored(exchange, downstream, entry, now, extra)

    def _revalidate(
        self,
        exchange: Exchange,
        downstream: ResponseSink,
        key: bytes,
        entry: StoredResponse,
        *,
        forward: bytes,
        now: float,
        background: bool = False,
    ) -> StoreFilter:
        """Ask the upstream with the entry's validators instead of the client's own
        (the client's are answered from the freshened entry)."""
        client_headers = exchange.headers
        asked = [pair for pair in client_headers if pair[0].lower() not in _CONDITIONAL]
        if entry.etag is not None:
            asked.append((b"If-None-Match", entry.etag))
        if entry.last_modified is not None:
            asked.append((b"If-Modified-Since", entry.last_modified))
        exchange.headers = asked
        raw_cc = exchange.header(b"cache-control")
        request_cc = cache_control.parse(raw_cc) if raw_cc is not None else _EMPTY
        return StoreFilter(
            downstream,
            self,
            exchange,
            key=key,
            forward=forward,
            revalidating=entry,
            request_cc=request_cc,
            request_time=now,
            client_headers=client_headers,
            stale=entry,
            background=background,
        )

    # Storing ----------------------------------------------------------------------------

    def stored_headers(self, headers: Headers, directives: Directives, now: float) -> Headers:
        """What of an answer's head is stored: no hop-by-hop, framing or Age, no
        Set-Cookie unless shared, no field a qualified `private` names; a Date if the
        upstream sent none (RFC 9110 §6.6.1)."""
        private = private_fields(directives) or frozenset()
        share_cookie = self.config.share_set_cookie
        kept: Headers = []
        has_date = False
        for name, value in headers:
            lower = name.lower()
            if lower in _NOT_STORED or lower in private:
                continue
            if lower == b"set-cookie" and not share_cookie:
                continue
            if lower == b"date":
                has_date = True
            kept.append((name, value))
        if not has_date:
            kept.append((b"Date", _imf_date(now)))
        return kept

    def make_entry(
        self,
        exchange: Exchange,
        status: int,
        reason: bytes,
        *,
        headers: Headers,
        body: bytes,
        request_time: float,
        response_time: float,
        vary: tuple[bytes, ...],
        client_headers: Headers,
    ) -> StoredResponse:
        directives = self.directives(headers)
        date_value = http_date(cache_control.joined(headers, b"date")) or response_time
        targeted = self.targeted(headers) is not None
        expires = None if targeted else cache_control.joined(headers, b"expires")
        span = lifetime(
            status,
            directives,
            expires=expires,
            has_expires=expires is not None,
            date_value=date_value,
            last_modified=cache_control.joined(headers, b"last-modified"),
            heuristic=self.config.heuristic,
            heuristic_max=self.config.heuristic_max,
            default_ttl=self.config.default_ttl,
        )
        age = initial_age(
            cache_control.joined(headers, b"age"), date_value, request_time, response_time
        )
        return StoredResponse(
            status=status,
            reason=reason,
            headers=self.stored_headers(headers, directives, response_time),
            body=body,
            directives=directives,
            lifetime=span,
            initial_age=age,
            response_time=response_time,
            vary=vary_key(vary, client_headers),
            identity=self.identity(exchange),
            tags=self.entry_tags(exchange, headers),
        )

    def targeted(self, headers: Headers) -> Directives | None:
        return cache_control.targeted(headers, self.targets) if self.targets else None

    def directives(self, headers: Headers) -> Directives:
        """The directives this cache obeys: a targeted field's (RFC 9213), else
        Cache-Control's."""
        targeted = self.targeted(headers)
        if targeted is not None:
            return targeted
        return cache_control.parse(cache_control.joined(headers, b"cache-control"))

    def entry_tags(self, exchange: Exchange, headers: Headers) -> frozenset[str]:
        tags: set[str] = set()
        for name in (b"cache-tag", b"surrogate-key"):
            value = cache_control.joined(headers, name)
            if value:
                tags.update(t for t in value.decode("latin-1").replace(",", " ").split() if t)
        params = exchange.params or {}
        for template in self.tags:
            try:
                tags.add(template.format(**params))
            except (KeyError, IndexError, ValueError):
                continue  # a parameter this route's path does not have
        return frozenset(tags)

    def storable(
        self,
        exchange: Exchange,
        status: int,
        headers: Headers,
        *,
        directives: Directives,
        request_cc: Directives,
        length: int | None,
    ) -> tuple[bytes, ...] | None:
        """RFC 9111 §3 for a shared cache: the response's Vary names if it may be stored."""
        if exchange.method != b"GET" or b"no-store" in request_cc:
            return None
        if exchange.content_length or exchange.body.received:
            # A GET with a body ("fat GET"): the body is not in the key, but an origin may
            # answer by it; stored, one client's body would choose everyone's answer.
            return None
        if status < 200 or status in (206, 304):
            return None
        if length is not None and length > self.config.max_entry_bytes:
            return None
        if b"must-understand" in directives:
            if status not in _UNDERSTOOD:
                return None
        elif b"no-store" in directives:
            return None
        per_identity = self.identity(exchange) is not None
        if b"private" in directives and private_fields(directives) is None and not per_identity:
            return None
        if (
            # Authenticated some other way (a token from a cookie, an API key, a client
            # certificate) is authorized all the same: RFC 9111 3.5 names only the header.
            (exchange.authorization is not None or exchange.identity is not None)
            and not per_identity
            and not _authorized_sharable(directives)
        ):
            return None
        names = vary_names(cache_control.joined(headers, b"vary"))
        if names is None:
            return None
        if names and not self.unkeyable.isdisjoint(names):
            # Varies by a header the gateway sets (X-User-ID...): every client's request
            # lacks it, so every caller would select the first caller's answer.
            return None
        explicit = (
            b"public" in directives
            or b"max-age" in directives
            or b"s-maxage" in directives
            or (self.targeted(headers) is None and _has(headers, b"expires"))
        )
        if not explicit and not per_identity and exchange.header(b"cookie") is not None:
            # Web cache deception: an answer to a request with a cookie is likely personal;
            # if the upstream said nothing about caching, default_ttl or heuristic freshness
            # would hand the victim's page to whoever asks for the same URL next.
            return None
        allowed = (
            explicit or status in HEURISTIC_STATUSES or (per_identity and b"private" in directives)
        )
        return names if allowed else None


def judge(entry: StoredResponse, request_cc: Directives, now: float) -> int:
    """May `entry` answer this request (RFC 9111 §4.2, §5.2.1)?"""
    if entry.needs_validation or _asks_validation(request_cc):
        return REVALIDATE
    age = entry.age(now)
    ttl = entry.lifetime - age
    max_age = seconds(request_cc, b"max-age")
    if max_age is not None and max_age >= 0 and age > max_age:
        return REVALIDATE
    min_fresh = seconds(request_cc, b"min-fresh")
    if min_fresh is not None and min_fresh >= 0 and ttl < min_fresh:
        return REVALIDATE
    if ttl > 0:
        return FRESH
    if forbids_stale(entry.directives):
        return REVALIDATE
    if b"max-stale" in request_cc:
        limit = seconds(request_cc, b"max-stale")
        if (limit == -1 and request_cc[b"max-stale"] is None) or -ttl <= (limit or 0):
            return STALE_OK
    if -ttl <= stale_window(entry.directives, b"stale-while-revalidate"):
        return STALE_REFRESH
    return REVALIDATE


def _authorized_sharable(directives: Directives) -> bool:
    """RFC 9111 §3.5: what lets a shared cache store an answer to an authorized request."""
    return b"public" in directives or b"s-maxage" in directives or b"must-revalidate" in directives


def _asks_validation(request_cc: Directives) -> bool:
    return b"no-cache" in request_cc or request_cc.get(b"max-age") == b"0"


def _has(headers: Headers, lower_name: bytes) -> bool:
    return cache_control.joined(headers, lower_name) is not None


def _imf_date(now: float) -> bytes:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()


def stale_if_error(entry: StoredResponse, request_cc: Directives, now: float) -> bool:
    """Whether a stale `entry` may stand in for an error (RFC 5861 §4, request or
    response directive), never past must-revalidate & co."""
    if forbids_stale(entry.directives) and not entry.needs_validation:
        return False
    if b"must-revalidate" in entry.directives or b"proxy-revalidate" in entry.directives:
        return False
    stale_for = -entry.ttl(now)
    window = max(
        stale_window(entry.directives, b"stale-if-error"),
        stale_window(request_cc, b"stale-if-error"),
    )
    return stale_for <= window and window > 0


class StoreFilter(ResponseFilter):
    """A GET/HEAD that the cache could not answer: tees a storable answer's body and stores
    it once complete; for a revalidation, turns a 304 into the freshened entry."""

    __slots__ = (
        "_background",
        "_cache",
        "_chunks",
        "_client_headers",
        "_exchange",
        "_fill",
        "_forward",
        "_head",
        "_key",
        "_lock",
        "_request_cc",
        "_request_time",
        "_revalidating",
        "_size",
        "_stale",
        "_swallow",
        "_vary",
    )

    def __init__(
        self,
        downstream: ResponseSink,
        cache: Cache,
        exchange: Exchange,
        *,
        key: bytes,
        forward: bytes,
        revalidating: StoredResponse | None,
        request_cc: Directives,
        request_time: float,
        client_headers: Headers | None = None,
        stale: StoredResponse | None = None,
        background: bool = False,
        fill: Fill | None = None,
        lock: bytes | None = None,
    ) -> None:
        super().__init__(downstream)
        self._fill = fill  # this request fills the key: waiters go on when it ends
        self._lock = lock  # the Redis fill lock's token: released once stored (or not)
        self._stale = stale  # what may stand in for an error or an open breaker
        self._background = background  # the client has its (stale) answer already
        self._cache = cache
        self._exchange = exchange
        self._key = key
        self._forward = forward
        self._revalidating = revalidating
        self._request_cc = request_cc
        self._request_time = request_time
        self._client_headers = exchange.headers if client_headers is None else client_headers
        self._chunks: list[bytes] | None = None
        self._size = 0
        self._swallow = False
        self._head: tuple[int, bytes, Headers, tuple[bytes, ...]] | None = None
        self._vary: tuple[bytes, ...] = ()

    def send_head(
        self,
        status: int,
        headers: Headers,
        *,
        reason: bytes | None = None,
        length: int | None = None,
        body: bool = True,
    ) -> None:
        cache = self._cache
        entry = self._revalidating
        if entry is not None and status == 304:
            self._freshened(entry, headers)
            return
        stale = self._stale
        if (
            stale is not None
            and status >= 500
            and (self._background or stale_if_error(stale, self._request_cc, time.time()))
        ):
            self._stand_in(stale, status)
            return
        directives = cache.directives(headers)
        vary = cache.storable(
            self._exchange,
            status,
            headers,
            directives=directives,
            request_cc=self._request_cc,
            length=length,
        )
        status_value = cache.name + b"; fwd=" + self._forward + b"; fwd-status=%d" % status
        if vary is not None and body:
            self._chunks = []
            self._vary = vary
            self._head = (status, reason or b"", list(headers), vary)
            status_value += b"; stored"
        else:
            self._release()  # nothing will be stored: the waiters ask the upstream
        if not self._background:
            cache.counts["miss"][0] += 1
        headers.append((b"Cache-Status", status_value))
        if cache.config.x_cache:
            headers.append((b"X-Cache", b"MISS"))
        self.downstream.send_head(status, headers, reason=reason, length=length, body=body)

    def send_body(self, data: bytes) -> None:
        if self._swallow:
            return
        chunks = self._chunks
        if chunks is not None:
            self._size += len(data)
            if self._size > self._cache.config.max_entry_bytes:
                self._chunks = None  # too large: it streams on, unstored
            else:
                chunks.append(data)
        self.downstream.send_body(data)

    def flush(self) -> None:
        if not self._swallow:
            self.downstream.flush()

    def end(self) -> None:
        if self._swallow:
            return
        head = self._head
        chunks = self._chunks
        if head is not None and chunks is not None:
            status, reason, headers, vary = head
            cache = self._cache
            entry = cache.make_entry(
                self._exchange,
                status,
                reason,
                headers=headers,
                body=b"".join(chunks),
                request_time=self._request_time,
                response_time=time.time(),
                vary=vary,
                client_headers=self._client_headers,
            )
            if entry.lifetime > 0 or entry.has_validator:
                cache.put(self._key, entry, self._lock)
                self._lock = None
                if self._fill is not None:
                    self._fill.variants = [entry]
        self._end_refresh()
        self.downstream.end()
        self._release()

    def abort(self, reason: str) -> None:
        if self._swallow:
            return
        self._end_refresh()
        self._chunks = None
        self.downstream.abort(reason)
        self._release()

    def _release(self) -> None:
        fill = self._fill
        if fill is not None:
            self._fill = None
            self._cache.fills.finish(self._key, fill)
        lock = self._lock
        if lock is not None:
            self._lock = None
            redis = self._cache.redis
            if redis is not None:
                redis.release(self._key, lock)

    def __del__(self) -> None:
        # A filter whose client left is dropped without `end` or `abort`: its waiters
        # must not sit out the whole lock_timeout (they ask the upstream now).
        if self._fill is not None or self._lock is not None:
            with contextlib.suppress(RuntimeError):  # no running loop: shutting down
                self._release()

    def unavailable(self, status: int, breaker_open: bool) -> bool:
        self._release()
        stale = self._stale
        if self._background:
            self._end_refresh()
            return True  # the client was answered already: nothing to send
        if stale is None:
            return self.downstream.unavailable(status, breaker_open)
        now = time.time()
        config = self._cache.config
        usable = stale_if_error(stale, self._request_cc, now) or (
            breaker_open and config.stale_when_open and not forbids_stale(stale.directives)
        )
        if not usable:
            return self.downstream.unavailable(status, breaker_open)
        self._stand_in(stale, status)
        return True

    def _end_refresh(self) -> None:
        if self._background:
            self._cache.refreshing.pop(self._key, None)

    def _freshened(self, entry: StoredResponse, headers: Headers) -> None:
        """A 304 to our conditional request: the entry with the 304's fields (RFC 9111
        §4.3.4), stored and sent to the client (a 304 if the client's own conditions hold)."""
        self._swallow = True
        cache = self._cache
        exchange = self._exchange
        # A 304 without Date replaces the stored one too: the answer is as new as the 304
        # (kept, the old Date would make the freshened entry as old as the first answer).
        updated_names = ({name.lower() for name, _ in headers} | {b"date"}) - {b"content-length"}
        merged = [pair for pair in entry.headers if pair[0].lower() not in updated_names]
        merged.extend(pair for pair in headers if pair[0].lower() != b"content-length")
        now = time.time()
        names = tuple(name for name, _ in entry.vary)
        exchange.headers = self._client_headers
        fresh = cache.make_entry(
            exchange,
            entry.status,
            entry.reason,
            headers=merged,
            body=entry.body,
            request_time=self._request_time,
            response_time=now,
            vary=names,
            client_headers=self._client_headers,
        )
        if b"no-store" in fresh.directives:
            cache.remove(self._key)
        else:
            cache.replace(self._key, entry, fresh)
        if self._background:
            self._end_refresh()
            return
        cache.counts["revalidated"][0] += 1
        extra = [
            (
                b"Cache-Status",
                cache.name
                + b"; fwd="
                + self._forward
                + b"; fwd-status=304; ttl=%d" % int(fresh.ttl(now)),
            )
        ]
        if cache.config.x_cache:
            extra.append((b"X-Cache", b"HIT"))
        send_stored(exchange, self.downstream, fresh, now, extra)

    def _stand_in(self, entry: StoredResponse, status: int) -> None:
        """stale-if-error: the stale entry instead of the upstream's error."""
        self._swallow = True
        if self._background:
            self._end_refresh()
            return
        cache = self._cache
        exchange = self._exchange
        exchange.headers = self._client_headers
        now = time.time()
        cache.counts["stale"][0] += 1
        value = cache.name + b"; fwd=stale; fwd-status=%d; ttl=%d" % (status, int(entry.ttl(now)))
        extra = [(b"Cache-Status", value)]
        if cache.config.x_cache:
            extra.append((b"X-Cache", b"STALE"))
        send_stored(exchange, self.downstream, entry, now, extra)


class _Discard:
    """Where a background refresh's answer goes once stored: nowhere (its client has
    been answered)."""

    __slots__ = ()

    def send_head(
        self,
        status: int,
        headers: Headers,
        *,
        reason: bytes | None = None,
        length: int | None = None,
        body: bool = True,
    ) -> None:
        pass

    def send_body(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def end(self) -> None:
        pass

    def abort(self, reason: str) -> None:
        pass

    def unavailable(self, status: int, breaker_open: bool) -> bool:
        return True


_DISCARD = _Discard()


class InvalidateFilter(ResponseFilter):
    """An unsafe method: after a 2xx or 3xx, the target URI and the same-origin URIs in
    Location and Content-Location are stale for every variant (RFC 9111 §4.4)."""

    __slots__ = ("_cache", "_exchange")

    def __init__(self, downstream: ResponseSink, cache: Cache, exchange: Exchange) -> None:
        super().__init__(downstream)
        self._cache = cache
        self._exchange = exchange

    def send_head(
        self,
        status: int,
        headers: Headers,
        *,
        reason: bytes | None = None,
        length: int | None = None,
        body: bool = True,
    ) -> None:
        if 200 <= status < 400:
            cache = self._cache
            exchange = self._exchange
            cache.remove(cache.key(exchange))
            host = exchange.host.lower()
            for name in (b"location", b"content-location"):
                target = _same_origin_target(cache_control.joined(headers, name), host)
                if target is not None:
                    cache.remove(host + b" " + target)
        self._cache.counts["bypass"][0] += 1
        self.downstream.send_head(status, headers, reason=reason, length=length, body=body)


def _same_origin_target(value: bytes | None, host: bytes) -> bytes | None:
    """The path and query of a Location/Content-Location on this host, or None."""
    if not value or b"," in value:
        return None
    value = value.strip()
    if value.startswith(b"/") and not value.startswith(b"//"):
        return value
    scheme, sep, rest = value.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return None
    authority, slash, path = rest.partition(b"/")
    if authority.lower() != host:
        return None
    return b"/" + path if slash else b"/"


def _shared_redis(context: BuildContext) -> Redis:
    """The worker's one Redis client of the caches, closed with the worker."""

    def create() -> Redis:
        client = redis_client(context.redis)

        async def close() -> None:
            await client.aclose()

        context.resources.on_close(close)
        return client

    found: Redis = context.resources.get("cache.redis", create)
    return found


def build(config: CacheConfig | None, context: BuildContext) -> Policy | None:
    if config is None:
        return None
    # The store outlives a reload (Resources are the worker's): a reload keeps the entries.
    store: MemoryStore = context.resources.get(
        f"cache.memory:{context.route_name}", lambda: MemoryStore(config.max_bytes)
    )
    store.max_bytes = config.max_bytes
    cache = Cache(
        config,
        store,
        context.route_name,
        context.metrics,
        gateway_set=context.settings.dropped_headers,
    )
    if config.store == "redis":
        cache.redis = RedisStore(
            _shared_redis(context),
            config.redis_prefix,
            max_body=config.redis_max_body,
            timeout=config.redis_timeout,
            directives=cache.directives,
        )
    cache_registry(context.resources).add(cache, context.metrics)
    return Policy(
        name="cache", stage=Stage.CACHE, on_request=cache.hold, response_filter=cache.open
    )
