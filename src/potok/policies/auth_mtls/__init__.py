"""The `auth_mtls` policy: the verified client certificate of an https listener as the identity."""
