"""Validation at the edge for both entry paths: the HTTP gateway and ``hie.inbound.v1``."""
