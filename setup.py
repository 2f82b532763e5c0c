"""The one thing pyproject.toml cannot say: the tracer's C encoders, built when a C
compiler is there (optional: without one the Python encoders in encode.py run instead,
same bytes, slower; see docs/operations.md)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "potok.observability.tracing._encode",
            ["src/potok/observability/tracing/_encode.c"],
            optional=True,
        )
    ]
)
