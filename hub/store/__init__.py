"""SQL storage: one engine factory, the hub's own tables, and dialect-specific upserts."""

from hub.store.db import Store, open_store

__all__ = ["Store", "open_store"]
