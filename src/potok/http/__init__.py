"""HTTP pieces shared by the server (server/), the upstream client (upstream/), identity and
the policies: byte-level HTTP/1.1 helpers and the server's plain-number settings. Neutral
ground: it imports nothing else of potok's, so any layer may use it."""
