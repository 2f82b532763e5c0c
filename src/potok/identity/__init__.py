"""Identity: users, API keys, tokens, passwords, revocation and audit, on one database layer."""

# The config models embed this package's config (`auth:`, `database:`); loading the config
# package first keeps the import order the same whichever module a caller imports first.
import potok.config  # noqa: F401
