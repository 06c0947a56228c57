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


def error(status: int, message: str, code: str = "invalid", location: str = "(request)"
          ) -> FhirResponse:
    return outcome_response(status, [Issue(location, message, code)])
