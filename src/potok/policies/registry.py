"""Every policy Potok knows: its config field name and its builder. One line each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from potok.policies.auth_api_key import policy as auth_api_key
from potok.policies.auth_jwt import policy as auth_jwt
from potok.policies.authorize import policy as authorize
from potok.policies.base import BuildContext, Policy
from potok.policies.compress import policy as compress
from potok.policies.concurrency_limit import policy as concurrency_limit
from potok.policies.cors import policy as cors
from potok.policies.headers import policy as headers
from potok.policies.ip_filter import policy as ip_filter
from potok.policies.rate_limit import policy as rate_limit
from potok.policies.request_size import policy as request_size
from potok.policies.security_headers import policy as security_headers
from potok.policies.validate import policy as validate

Builder = Callable[[Any, BuildContext], Policy | None]

POLICY_BUILDERS: dict[str, Builder] = {
    "headers": headers.build,
    "auth_jwt": auth_jwt.build,
    "auth_api_key": auth_api_key.build,
    "authorize": authorize.build,
    # Same-stage policies run in this order: ip_filter, cors, security_headers, request_size.
    "ip_filter": ip_filter.build,
    "cors": cors.build,
    "security_headers": security_headers.build,
    "rate_limit": rate_limit.build,
    "concurrency_limit": concurrency_limit.build,
    "validate": validate.build,
    "request_size": request_size.build,
    "compress": compress.build,
}
