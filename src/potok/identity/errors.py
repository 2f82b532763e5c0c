"""401 and 403 as gateway errors (problem+json), with the Bearer challenge of RFC 6750."""

from __future__ import annotations

from potok.errors import GatewayError


class Unauthorized(GatewayError):
    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str, *, error: str = "invalid_token") -> None:
        challenge = f'Bearer realm="potok", error="{error}"'.encode()
        super().__init__(detail, headers=((b"WWW-Authenticate", challenge),))


class MissingCredentials(GatewayError):
    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str = "authentication required") -> None:
        super().__init__(detail, headers=((b"WWW-Authenticate", b'Bearer realm="potok"'),))


class Forbidden(GatewayError):
    status = 403
    title = "Forbidden"
