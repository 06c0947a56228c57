"""The contract files generated from code: the feeds' JSON Schemas and the AsyncAPI document.

``hub app schemas`` writes them into ``schemas/``; ``tests/unit/test_schemas.py`` fails when
a file there differs from what this module generates, so the models stay the one source.
The AsyncAPI document is faststream's, built from the hub's topics (declared here as the
publishers and subscribers of a broker that is never connected) and from the example
notifier app's own subscribers and publisher.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from adapters.apps import feeds
from adapters.apps.notifier import Notifier
from hub.config import Settings, Topics

JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.yaml"
CLOUDEVENT = ("Each record is a CloudEvents 1.0 event in Kafka binary mode: headers "
              "ce_specversion, ce_id (= id), ce_source urn:hie:hub, ce_type, content-type "
              "application/json. At least once: skip an id already seen.")


@dataclass(frozen=True)
class FeedContract:
    topic: str  # its field in the settings' Topics
    channel: str  # its name in the AsyncAPI document
    file: str
    title: str
    shape: Any  # a model, or a union of models
    description: str = ""  # for a union, which has no docstring of its own

    def schema(self) -> dict:
        body = TypeAdapter(self.shape).json_schema()
        name = self.file.removesuffix(".schema.json")
        said = " ".join(body.pop("description", self.description).split())
        doc = {"$schema": JSON_SCHEMA, "$id": f"urn:hie:schema:{name}:v1", "title": self.title,
               "description": f"{said} {CLOUDEVENT}"}
        body.pop("title", None)
        return {**doc, **body}


RECOGNITION = Annotated[feeds.RecognitionMessage, Field(discriminator="type")]
FEED_CONTRACTS = (
    FeedContract("lab", "labFeed", "lab-feed.schema.json",
                 "hie.lab.v1 change-feed message (value; JSON)", feeds.LabChange),
    FeedContract("imaging", "imagingFeed", "imaging-feed.schema.json",
                 "hie.imaging.v1 message (value; JSON): a reading report back to the "
                 "facility that took the exam", feeds.ImagingReport),
    FeedContract("recognition", "recognitionPrompts", "recognition-prompt.schema.json",
                 "hie.recognition.v1 message (value; JSON): an order-time recognition prompt, "
                 "or its withdrawal", RECOGNITION,
                 "hie.recognition.v1: an order-time recognition prompt (RecognitionPrompt), "
                 "or its withdrawal (RecognitionWithdrawal). Kafka key: the ordering "
                 "facility's id. A withdrawal cancels the prompt for the same request."),
    FeedContract("referral", "referralFeed", "referral-feed.schema.json",
                 "hie.referral.v1 message (value; JSON): one referral step and the decision "
                 "on it", feeds.ReferralStep),
    FeedContract("alerts", "alertsFeed", "alerts-feed.schema.json",
                 "hie.alerts.v1 message (value; JSON): a remote-monitoring alert for a "
                 "family-doctor team, and what happened to it", feeds.AlertChange),
)


class FhirResource(BaseModel):
    """A FHIR R4B resource (schemas/envelope.schema.json is the record's contract: headers
    ce_specversion, ce_id, ce_source, ce_type fhir.<Type>.<upsert|delete>.v1, ce_subject,
    ce_time, content-type application/fhir+json, ce_signature; key = the patient key
    <facility>.<patient id>)."""

    model_config = ConfigDict(extra="allow")
    resourceType: str
    id: str


def hub_broker(settings: Settings) -> KafkaBroker:
    """The hub's own topics, as faststream publishers (what it sends) and a subscriber (what
    facilities send it). Described only: this broker is never started."""
    t = settings.topics
    broker = KafkaBroker(settings.bootstrap, description="The hub's Kafka (the bundled "
                         "broker of `hub serve` / `make demo` unless HUB_KAFKA_BOOTSTRAP says)")
    broker.subscriber(t.inbound, title="inbound", description=(
        "Facilities publishing straight to Kafka (adapters/sdk) write signed FHIR events "
        "here (schemas/envelope.schema.json). Nothing here is trusted: the ingest stage "
        "verifies and validates, then appends to the events topic or dead-letters."))
    broker.publisher(t.events, title="events", schema=FhirResource, description=(
        "The validated log and source of truth. At least 6 partitions. Only the gateway, the "
        "ingest stage and the hub itself write here. Consumers must skip event ids they "
        "already applied. Besides facilities' events (ce_source urn:hie:facility:<id>) it "
        "carries the hub's own (ce_source urn:hie:hub, signed with a hub#<n> key): registry "
        "changes as Organization upserts (key registry.<facility>), and patient-index "
        "decisions as Person and Task upserts (key mpi, so they keep their order)."))
    broker.publisher(t.deadletter, title="deadletter", schema=bytes, description=(
        "Refused or unprocessable records, value kept byte for byte, with hub_error_stage "
        "(gateway, ingest, projection:<name>, hl7v2), hub_error_reason (<reason code>: <first "
        "problem>), hub_error_time, hub_error_origin (topic/partition/offset), "
        "hub_error_outcome (a FHIR OperationOutcome as JSON), hub_facility and "
        "hub_deadletter_id (for the hub's own refusals, its row: GET /deadletters/{id}) "
        "headers. The hub keeps every dead letter in SQL (hub_dead_letters)."))
    broker.publisher(t.receipts, title="receipts", description=(
        "What became of each facility's inbound events (schemas/receipt.schema.json, "
        "content-type application/vnd.hie.receipt+json), key = the facility id: journaled "
        "(the SQL journal committed them) or refused (with the reason; the refusal is kept "
        "in SQL). The SDK's outbox and `hub mllp` wait for these before they call an event "
        "kept. At least once; an event sent again is answered again."))
    for feed in FEED_CONTRACTS:
        broker.publisher(getattr(t, feed.topic), title=feed.channel, schema=feed.shape,
                         description=feed.schema()["description"])
    return broker


def asyncapi(settings: Settings) -> AsyncAPI:
    return AsyncAPI(hub_broker(settings), Notifier(settings, "<facility>").broker,
                    title="HIE hub event log", version="1.0.0", description=(
                        "Topics of the health-information exchange hub, and of the example "
                        "downstream app (`hub app notifier`). Generated by faststream from "
                        "the pydantic models in adapters/apps/feeds.py."))


def asyncapi_document(settings: Settings) -> dict:
    """The AsyncAPI document as JSON-able data, its maps in name order (faststream lists
    channels in no stable order, and a generated file must not change from run to run)."""
    return _sorted(asyncapi(settings).to_specification().to_jsonable())


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def asyncapi_yaml(settings: Settings) -> str:
    return yaml.safe_dump(asyncapi_document(settings), sort_keys=False, allow_unicode=True,
                          width=100)


def default_settings() -> Settings:
    """The settings' defaults, whatever HUB_* the environment holds: the files describe the
    stock topic names."""
    topics = Topics.model_construct(**{n: f.default for n, f in Topics.model_fields.items()})
    return Settings.model_construct(**{
        n: f.get_default(call_default_factory=True) for n, f in Settings.model_fields.items()
    } | {"topics": topics})


def generated() -> dict[str, str]:
    """File name in ``schemas/`` → its generated text."""
    out = {c.file: json.dumps(c.schema(), indent=2, ensure_ascii=False) + "\n"
           for c in FEED_CONTRACTS}
    out[ASYNCAPI_FILE] = asyncapi_yaml(default_settings())
    return out


def stale(folder: Path) -> list[str]:
    """The generated files that ``folder`` lacks or holds in another version."""
    return sorted(name for name, text in generated().items()
                  if not (folder / name).is_file() or (folder / name).read_text() != text)


def write(folder: Path) -> list[str]:
    """Write the generated files that differ; the names written."""
    names = stale(folder)
    texts = generated()
    for name in names:
        (folder / name).write_text(texts[name])
    return names
