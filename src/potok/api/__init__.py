"""The gateway's own HTTP API under /api/v1 (FastAPI, behind the ASGI bridge)."""
