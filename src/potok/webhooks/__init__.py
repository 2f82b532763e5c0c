"""Webhook ingress: verified signatures, replay protection, durable storage before the
2xx and at-least-once delivery to a service and/or the event bus (docs/webhooks.md)."""
