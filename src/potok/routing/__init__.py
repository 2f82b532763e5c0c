"""Routing: path patterns, the compiled route table and path rewrites."""
