"""Publishing exported files (FHIR JSON/ndjson, lab-result CSVs) through the facility SDK."""
