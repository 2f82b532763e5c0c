"""Potok's own HTTP/1.1 server on asyncio protocols + httptools (llhttp).

Proxied requests never leave this layer's callbacks except to reach the
upstream client; the gateway's own API runs behind the ASGI bridge.
"""
