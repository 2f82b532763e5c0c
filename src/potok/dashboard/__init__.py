"""The operator's dashboard at /dashboard (docs/operations.md#the-dashboard): a static,
framework-free page shipped in the package (`static/`), guarded like the admin API, fed
by one Server-Sent Events stream (/dashboard/stream) and acting through the admin API.

A module per concept: `rates` (request rate, error rate and p99 per route from the
gateway's own metrics, as deltas between two samples), `snapshot` (what one update
holds), `router` (the page, its assets and the stream).
"""
