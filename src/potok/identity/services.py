"""Everything identity a worker shares: database, denylist, audit log, API keys, token service.

Built once per worker from the config (cheap and without I/O, so `potok
routes` can build a Runtime too); `start()` migrates the database and starts
the background tasks, `close()` stops them and flushes what is buffered.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from potok.identity.api_key_mirror import ApiKeyMirror
from potok.identity.api_keys import ApiKeyStore
from potok.identity.audit import AuditLog, AuditStore
from potok.identity.database import Database, redacted
from potok.identity.forwarding import IdentityHeaders
from potok.identity.jwks import JwksKeySet
from potok.identity.jwt_config import ClaimNamesConfig, JwksConfig, JwtIssuerConfig, JwtTrustConfig
from potok.identity.keys import VerifyKey, hmac_key, public_key, read_pem, signing_key
from potok.identity.login_failures import LoginFailureStore
from potok.identity.login_guard import LoginGuard
from potok.identity.passwords import PasswordHasher
from potok.identity.refresh_tokens import RefreshTokenStore
from potok.identity.revocation import Denylist, Revocations, RevocationStore
from potok.identity.schema import migrate
from potok.identity.token_service import TokenIssuer, TokenService
from potok.identity.users import UserStore
from potok.identity.verifier import TokenVerifier, TrustedIssuer

if TYPE_CHECKING:
    from potok.config.models import GatewayConfig
    from potok.resources import Resources

log = structlog.get_logger("potok.identity")

RESOURCE_KEY = "identity"


def uses_api_keys(config: GatewayConfig) -> bool:
    blocks = [config.policies, *(route.policies for route in config.routes)]
    keys = [getattr(block, "auth_api_key", None) for block in blocks]  # a generated model
    return any(key is not None and key.auth != "none" for key in keys)


def needs_database(config: GatewayConfig) -> bool:
    return (
        config.auth.token_service.enabled
        or uses_api_keys(config)
        or "database" in config.model_fields_set
    )


class IdentityServices:
    def __init__(self, config: GatewayConfig) -> None:
        auth = config.auth
        self.config = config
        self.headers = IdentityHeaders(auth.identity_headers)
        self.database = Database(config.database) if needs_database(config) else None
        db = self.database
        self.users = UserStore(db) if db is not None else None
        self.denylist = Denylist()
        self.revocations = Revocations(
            auth.revocation,
            RevocationStore(db) if db is not None else None,
            self.denylist,
            shared_redis=config.redis,
        )
        self.audit = AuditLog(auth.audit, AuditStore(db) if db is not None else None)
        self.hasher = PasswordHasher(auth.passwords)
        self.api_keys = (
            ApiKeyMirror(auth.api_keys, ApiKeyStore(db), self.headers)
            if db is not None and uses_api_keys(config)
            else None
        )
        self.token_key: VerifyKey | None = None
        self.token_service: TokenService | None = None
        service = auth.token_service
        if service.enabled and service.signing is not None and db is not None:
            key = signing_key(service.signing)
            self.token_key = key.verify
            verifier = TokenVerifier([self.token_issuer()], 30.0, ClaimNamesConfig(), self.headers)
            self.token_service = TokenService(
                service,
                issuer=TokenIssuer(service, key),
                verifier=verifier,
                users=UserStore(db),
                refresh_tokens=RefreshTokenStore(db),
                hasher=self.hasher,
                guard=LoginGuard(auth.login_protection, LoginFailureStore(db)),
                revocations=self.revocations,
                audit=self.audit,
            )
        self._jwks: dict[str, JwksKeySet] = {}
        self._started = False

    def token_issuer(self) -> TrustedIssuer:
        """The token service as an issuer a JWT verifier can trust."""
        service = self.config.auth.token_service
        assert self.token_key is not None
        return TrustedIssuer(
            service.issuer, (service.audience,), {self.token_key.kid: self.token_key}
        )

    def trusted_issuer(self, config: JwtIssuerConfig) -> TrustedIssuer:
        """An external issuer with its static keys loaded, or its (shared) JWKS key set."""
        keys = {}
        for key in config.keys:
            if key.secret is not None:
                keys[key.kid] = hmac_key(key.algorithm, key.secret, key.kid)
            else:
                keys[key.kid] = public_key(
                    key.algorithm, read_pem(key.public_key, key.public_key_file), key.kid
                )
        jwks = self.jwks(config.jwks) if config.jwks is not None else None
        return TrustedIssuer(config.issuer, config.audiences, keys, jwks)

    def verifier(self, trust: JwtTrustConfig, where: str) -> TokenVerifier:
        """A verifier for the tokens `trust` accepts; `where` names the block in errors."""
        issuers = [self.trusted_issuer(i) for i in trust.issuers]
        if trust.token_service:
            if self.token_key is None:
                raise ValueError(f"{where}.token_service needs auth.token_service.enabled")
            issuers.append(self.token_issuer())
        return TokenVerifier(issuers, trust.leeway, trust.claims, self.headers)

    def jwks(self, config: JwksConfig) -> JwksKeySet:
        """The key set of a JWKS URL, shared by every route that trusts it."""
        key_set = self._jwks.get(config.url)
        if key_set is None:
            key_set = self._jwks[config.url] = JwksKeySet(config)
            if self._started:
                key_set.start()
        return key_set

    async def start(self) -> None:
        if self.database is not None:
            url = self.config.database.url
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            applied = await migrate(self.database)
            log.info("database ready", url=redacted(url), migrations_applied=applied)
        if self.token_service is not None:
            await self.hasher.warm_up()
        await self.revocations.start()
        self.audit.start()
        if self.api_keys is not None:
            await self.api_keys.start()
        for key_set in self._jwks.values():
            key_set.start()
        self._started = True

    async def close(self) -> None:
        for key_set in self._jwks.values():
            await key_set.close()
        if self.api_keys is not None:
            await self.api_keys.close()
        await self.revocations.close()
        await self.audit.close()
        if self.database is not None:
            await self.database.close()


def shared_identity(config: GatewayConfig, resources: Resources) -> IdentityServices:
    """The worker's identity services, created on first use and closed with the resources."""

    def create() -> IdentityServices:
        services = IdentityServices(config)
        resources.on_close(services.close)
        return services

    identity: IdentityServices = resources.get(RESOURCE_KEY, create)
    return identity
