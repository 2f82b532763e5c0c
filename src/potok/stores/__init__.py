"""Clients for the shared stores several gateway instances agree through (Redis)."""
