"""The `auth_jwt` policy."""
