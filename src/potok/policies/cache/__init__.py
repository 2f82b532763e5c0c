"""The `cache` policy: an RFC 9111 shared cache of upstream answers, per route."""
