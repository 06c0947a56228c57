"""Consortium activity: how many events each facility published, per resource type."""
