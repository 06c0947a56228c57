"""FHIR Bulk Data export: de-identification (pure), jobs, the SQL-to-ndjson writer."""
