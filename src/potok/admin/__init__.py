"""The admin API under /api/v1/admin: what the running gateway knows and what an operator
may change without a restart (docs/operations.md#the-admin-api).

A module per concept: `config` (its YAML block), `guard` (who may call it), `audit`
(every call recorded), `cluster` (reads and actions across `--workers N`), `agent` (what
one worker reports and does), `config_view`, `routes_view`, `services`, `top_keys`
(rate-limit refusals), `realtime_view`, `reloads`, `config_apply`, `identity`, `router`.
"""
