"""The ACME protocol steps, over the `acme` library (certbot's). Blocking (requests):
every method here runs in a worker thread (`asyncio.to_thread`), never on the loop."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import cast

from acme import challenges, messages
from acme.client import ClientNetwork, ClientV2
from acme.errors import ConflictError
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWK, JWKEC

from potok import __version__

USER_AGENT = f"potok/{__version__}"


def new_account_key() -> str:
    """A fresh ECDSA P-256 account key as JWK JSON (private)."""
    key = JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    return key.json_dumps()


def load_account_key(key_json: str) -> JWK:
    return JWK.json_loads(key_json)


@dataclass(frozen=True, slots=True)
class PendingChallenge:
    """One HTTP-01 challenge of an order: the answer to publish and what to tell the CA."""

    token: str
    key_authorization: str
    body: messages.ChallengeBody
    response: challenges.ChallengeResponse


class NoHttp01(Exception):
    """The CA offered no HTTP-01 challenge for a name."""


class AcmeClient:
    """One account at one CA. Construction fetches the directory (network)."""

    def __init__(
        self,
        directory_url: str,
        account_key: JWK,
        ca_bundle: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.key = account_key
        # requests takes a CA bundle path where `verify_ssl` goes; the library types it bool.
        verify = cast(bool, ca_bundle) if ca_bundle else True
        self.net = ClientNetwork(
            account_key,
            alg=ES256,
            verify_ssl=verify,
            user_agent=USER_AGENT,
            timeout=int(timeout),
        )
        self.client = ClientV2(ClientV2.get_directory(directory_url, self.net), self.net)

    def terms_of_service(self) -> str | None:
        meta = self.client.directory.meta
        terms: str | None = getattr(meta, "terms_of_service", None)
        return terms

    def account(self, email: str | None) -> str:
        """The account of this key at the CA (asked for, not assumed: a CA that lost it, as
        a restarted Pebble does, gets a new one); made at first use. Returns its URL."""
        try:
            existing = self.client.query_registration(
                messages.RegistrationResource(body=messages.Registration())
            )
            return str(existing.uri)
        except messages.Error as exc:
            if exc.code != "accountDoesNotExist":
                raise
        registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
        try:
            resource = self.client.new_account(registration)
        except ConflictError as exc:  # made meanwhile by another instance with this key
            self.net.account = messages.RegistrationResource(
                uri=exc.location, body=messages.Registration()
            )
            return str(exc.location)
        return str(resource.uri)

    def new_order(self, csr_pem: bytes) -> messages.OrderResource:
        return self.client.new_order(csr_pem)

    def http01(self, order: messages.OrderResource) -> list[PendingChallenge]:
        """The HTTP-01 challenges still to answer (an authorization the CA already holds
        as valid, from an earlier order, needs none)."""
        pending = []
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:
                continue
            body = next(
                (
                    c
                    for c in authorization.body.challenges
                    if isinstance(c.chall, challenges.HTTP01)
                ),
                None,
            )
            if body is None:
                name = authorization.body.identifier.value
                raise NoHttp01(f"the CA offers no http-01 challenge for {name}")
            chall = cast(challenges.HTTP01, body.chall)
            response, validation = chall.response_and_validation(self.key)
            token = chall.encode("token")
            pending.append(PendingChallenge(token, str(validation), body, response))
        return pending

    def answer(self, challenge: PendingChallenge) -> None:
        self.client.answer_challenge(challenge.body, challenge.response)

    def finalize(self, order: messages.OrderResource, timeout: float) -> bytes:
        """Wait for validation, finalize, and return the issued chain (leaf first)."""
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=timeout)
        done = self.client.poll_and_finalize(order, deadline)
        if done.fullchain_pem is None:
            raise RuntimeError("the CA finalized the order without a certificate")
        return done.fullchain_pem.encode()

    def revoke(self, chain_pem: bytes, reason: int = 0) -> None:
        """Revoke the leaf of `chain_pem` (RFC 5280 reason code; 0: unspecified,
        1: key compromise, 4: superseded, 5: cessation of operation)."""
        self.client.revoke(x509.load_pem_x509_certificate(chain_pem), reason)

    def close(self) -> None:
        self.net.session.close()
