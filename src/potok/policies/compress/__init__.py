"""The `compress` policy: gzip, br or zstd for upstream answers the client accepts."""
