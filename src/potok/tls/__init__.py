"""TLS termination on the gateway's own listeners (docs/tls.md).

config.py: the `tls:` block of an https listener; context.py: SSLContext settings
(TLS 1.2+, Mozilla "intermediate", ALPN, tickets, client certificates); store.py: the
certificates of one listener chosen by SNI, replaceable while serving (`install`);
watcher.py: re-reads certificate files when they change; session.py: what a connection
learnt in its handshake (version, ALPN, the verified client certificate).
"""
