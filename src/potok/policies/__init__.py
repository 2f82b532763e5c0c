"""Route policies: one folder each (config.py + policy.py), ordered by stage."""
