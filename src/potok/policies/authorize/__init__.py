"""The `authorize` policy."""
