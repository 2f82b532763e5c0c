"""OpenTelemetry tracing: W3C trace context in and out, spans encoded to OTLP protobuf
on the event loop as they end, exported over OTLP/HTTP in batches by the loop.

Why no SDK: one SDK span (start, attributes, end, the batch processor's lock) costs
about as many instructions as proxying the request does, and its `ReadableSpan` and
OTLP encoder cost five times a request at 100 % sampling (BENCHMARKS.md). Potok's few
span shapes are written as protobuf by hand (otlp.py), checked against the official
schema by the tests.
"""
