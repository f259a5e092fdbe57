"""overcast-agent: what runs first on every overcast VM (see overcast/agent/main.py)."""
