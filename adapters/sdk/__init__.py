"""Facility SDK: publish signed FHIR events straight to the hub's inbound Kafka topic."""

from adapters.sdk.publisher import FacilityPublisher, build_envelope, build_envelopes

__all__ = ["FacilityPublisher", "build_envelope", "build_envelopes"]
