"""Configuration: pydantic models (models.py), the YAML loader (loader.py) and the
schema/docs export (reference.py).

Nothing is imported here: a policy's config module imports `potok.config.base`, and
loading the package must not pull in the loader, whose models import every policy's
config (an import cycle that broke whichever module was imported first).
"""
