"""OperationOutcome responses: every error the HTTP side returns speaks FHIR."""

from __future__ import annotations

from fastapi.responses import Response

from hub.fhir import Issue, operation_outcome

FHIR_JSON = "application/fhir+json"


class FhirResponse(Response):
    media_type = FHIR_JSON

    def render(self, content: object) -> bytes:
        import orjson

        return orjson.dumps(content)


def outcome_response(status: int, issues: list[Issue], headers: dict | None = None
                     ) -> FhirResponse:
    return FhirResponse(operation_outcome(issues), status_code=status, headers=headers)


def error(status: int, message: str, code: str = "invalid", location: str = "(request)",
          headers: dict | None = None) -> FhirResponse:
    return outcome_response(status, [Issue(location, message, code)], headers)


# The publisher looks for an unreachable broker again every quarter second: a client may
# retry after a second.
RETRY_AFTER = {"Retry-After": "1"}


def unavailable(message: str) -> FhirResponse:
    """503 for an outage (broker or store): transient, with when to try again."""
    return error(503, message, "transient", headers=RETRY_AFTER)
