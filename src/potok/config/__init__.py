"""Configuration: pydantic models, the YAML loader and the schema/docs export."""

from potok.config.loader import ConfigError, load_config, load_config_text
from potok.config.models import GatewayConfig

__all__ = ["ConfigError", "GatewayConfig", "load_config", "load_config_text"]
