"""Signature schemes by preset name; each module builds a `Verifier` from a source."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from potok.webhooks.presets import generic_hmac, github, max_bot, slack, standard_webhooks, stripe

if TYPE_CHECKING:
    from potok.webhooks.config import SourceConfig
    from potok.webhooks.verification import Verifier

_BUILDERS: dict[str, Callable[[SourceConfig], Verifier]] = {
    "standard_webhooks": standard_webhooks.build,
    "github": github.build,
    "stripe": stripe.build,
    "slack": slack.build,
    "max_bot": max_bot.build,
    "generic_hmac": generic_hmac.build,
}


def build_verifier(source: SourceConfig) -> Verifier:
    return _BUILDERS[source.preset](source)
