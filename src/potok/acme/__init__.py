"""Automatic certificates over ACME (RFC 8555): HTTP-01 challenges answered by the gateway
itself, certificates stored for every instance (database or directory), renewed in the
background and handed to the TLS layer through `CertificateSink`."""
