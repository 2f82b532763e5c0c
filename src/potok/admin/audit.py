"""Every admin call recorded: the identity layer's audit log (database, batched, off the
request path) and one log line, so a gateway without a database still has a trail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from potok.identity.services import IdentityServices

log = structlog.get_logger("potok.admin")

PREFIX = "admin."


def record(
    identity: IdentityServices,
    action: str,
    status: int,
    *,
    actor: str | None,
    ip: str,
    request_id: str | None,
    detail: dict[str, Any],
) -> None:
    outcome = "ok" if status < 400 else "denied" if status in (401, 403) else "failed"
    event = PREFIX + action
    identity.audit.record(
        event,
        outcome,
        actor=actor,
        ip=ip,
        route="potok-admin",
        request_id=request_id,
        detail={**detail, "status": status},
    )
    log.info(
        "admin call",
        action=event,
        outcome=outcome,
        status=status,
        actor=actor,
        client_ip=ip,
        request_id=request_id,
        **detail,
    )
