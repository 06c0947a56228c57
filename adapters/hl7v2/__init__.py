"""HL7 v2 adapter: ORU^R01 and ADT messages to FHIR events, over MLLP or from files."""
