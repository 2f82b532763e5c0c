"""The last reloads each worker made, and their results, newest first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from potok.process.reload import Reloader, ReloadOutcome


def report(reloader: Reloader | None) -> list[dict[str, Any]]:
    if reloader is None:
        return []
    return [
        {
            "at": record.at,
            "trigger": record.trigger,
            "result": record.result,
            "problems": list(record.problems),
            "digest": record.digest,
            "changes": record.changes,
        }
        for record in reversed(reloader.history)
    ]


def outcome(result: ReloadOutcome, digest: str) -> dict[str, Any]:
    return {
        "result": result.result,
        "problems": list(result.problems),
        "digest": digest,
        "changes": result.changes,
    }


def merge(per_worker: dict[str, list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    merged = [
        {"worker": worker, **record} for worker, records in per_worker.items() for record in records
    ]
    merged.sort(key=lambda record: (-record["at"], record["worker"]))
    return merged[:limit]
