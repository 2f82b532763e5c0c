"""The base every configuration model shares: frozen, strict about unknown keys."""

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Frozen and closed: an unknown key is an error, never silently ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
