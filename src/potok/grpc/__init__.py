"""gRPC pass-through: routes marked `grpc` relay calls over HTTP/2 to their upstreams."""
