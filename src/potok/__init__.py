"""Potok: a fast API gateway for microservices."""

__version__ = "0.1.0"
