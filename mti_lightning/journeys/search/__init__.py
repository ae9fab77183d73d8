"""The search journey: prepare a search from a config, run it, write and show its results."""
