"""Health-information exchange hub: FHIR events in, shared projections out."""

__version__ = "0.1.0"
