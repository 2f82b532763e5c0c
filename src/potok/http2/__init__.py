"""HTTP/2 to clients (RFC 9113) with the `h2` library: h2c with prior knowledge on plain
listeners, ALPN "h2" on TLS. Each stream becomes one `Exchange` on the same per-route
pipeline as an HTTP/1.1 request; the stream is that exchange's `Responder`."""
