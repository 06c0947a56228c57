"""Adapters from what facilities emit to hub events, and the facility publishing SDK."""
