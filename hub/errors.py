"""One root exception for the hub; every driver error is translated to one of these."""

from __future__ import annotations


class HubError(Exception):
    """Root of every error the hub raises on purpose."""


class ConfigError(HubError):
    """The settings or a config file are unusable."""


class EnvelopeError(HubError):
    """A Kafka record is not a well-formed hub CloudEvent (missing or malformed header)."""


class AuthError(HubError):
    """The caller is unknown, or its credential or signature does not match.

    ``reason`` is a short code (``unknown-facility``, ``bad-signature``, ``source-mismatch``,
    ``key-retired``, ``key-revoked``, ``unsigned``...) that dead letters and metrics carry.
    """

    def __init__(self, message: str, reason: str = "bad-credential") -> None:
        super().__init__(message)
        self.reason = reason


class ValidationFailed(HubError):
    """A resource broke FHIR or consortium rules; `issues` says every problem and where."""

    def __init__(self, issues: list) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{i.location}: {i.diagnostics}" for i in issues))


class BrokerError(HubError):
    """The Kafka broker could not be started, reached or written to."""


class StoreError(HubError):
    """The SQL store failed; the original driver error is chained as __cause__."""


class NotAcknowledged(BrokerError):
    """The broker took the events but the journal did not commit them within the bound
    (durable acknowledgement): they are not acknowledged, though they may still be kept."""
