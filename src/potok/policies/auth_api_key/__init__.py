"""The `auth_api_key` policy."""
