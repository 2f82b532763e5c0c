"""OpenTelemetry tracing: W3C trace context in and out, spans recorded cheaply on the
event loop, exported over OTLP/HTTP in batches by a thread.

Why not the SDK's tracer on the hot path: one SDK span (start, attributes, end, the
batch processor's lock) costs about as many instructions as proxying the request
does, and a request here has two or more. The loop records plain tuples instead
(trace.py); the exporter thread turns them into the SDK's `ReadableSpan`s and hands
them to the SDK's OTLP exporter, which does the protobuf and the HTTP.
"""
