"""The `security_headers` policy's registry entry."""

from potok.policies.base import BuildContext, Policy, Stage
from potok.policies.entry import PolicyEntry
from potok.policies.security_headers.config import SecurityHeadersConfig
from potok.policies.security_headers.policy import build, own_pages_csp


def _own_pages(context: BuildContext) -> Policy:
    return own_pages_csp()


ENTRY = PolicyEntry(
    name="security_headers",
    config=SecurityHeadersConfig,
    build=build,
    stage=Stage.EDGE,
    rank=30,
    description="HSTS, nosniff, frame options, referrer policy, CSP.",
    own_api=True,
    api_description="HSTS, nosniff, frame options, referrer policy (own pages keep their CSP).",
    probes=True,  # adds headers, never refuses
    unrouted=True,  # a 404 carries them too
    own_api_default=_own_pages,  # the gateway's pages (Swagger UI) always have a CSP
)
