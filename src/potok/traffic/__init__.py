"""Traffic shaping: weighted and canary routes (split.py)."""
