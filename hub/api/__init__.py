"""HTTP: the FHIR ingest gateway and the read API (FastAPI)."""
