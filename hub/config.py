"""The hub's one settings object. This module is the only reader of environment variables.

Every setting is an env var prefixed ``HUB_`` (``HUB_KAFKA_BOOTSTRAP``, ``HUB_DATABASE_URL``...).
The same code runs embedded (no bootstrap given: the hub starts its bundled broker, memory
only, and a SQLite file) and at scale (Apache Kafka + PostgreSQL); only these values differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Topics(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_TOPIC_", frozen=True)

    inbound: str = "hie.inbound.v1"
    events: str = "hie.events.v1"
    deadletter: str = "hie.deadletter.v1"
    lab: str = "hie.lab.v1"  # change feed of the lab projection
    imaging: str = "hie.imaging.v1"  # reports back to the facilities that took the exams
    recognition: str = "hie.recognition.v1"  # order-time recognition prompts
    receipts: str = "hie.receipts.v1"  # journaled / refused, to the facility that sent it
    referral: str = "hie.referral.v1"  # every referral step and the decision on it
    alerts: str = "hie.alerts.v1"  # remote monitoring: alerts for family-doctor teams


class Monitoring(BaseSettings):
    """Remote monitoring: control thresholds (example values; each consortium sets its own),
    the team's SLA, and the MQTT device gateway. Env vars ``HUB_MONITORING_*``."""

    model_config = SettingsConfigDict(env_prefix="HUB_MONITORING_", frozen=True)

    sbp: float = 140.0
    dbp: float = 90.0
    sbp_diabetic: float = 130.0
    dbp_diabetic: float = 80.0
    bp_window: int = Field(default=5, ge=1)
    bp_needed: int = Field(default=3, ge=1)
    glucose_fasting: float = 7.0
    critical_sbp: float = 180.0
    critical_dbp: float = 110.0
    critical_glucose_high: float = 16.7
    critical_glucose_low: float = 3.0
    missing_days: float = Field(default=3.0, gt=0)
    sla_hours: float = Field(default=24.0, gt=0, description="An alert nobody acknowledged "
                             "within this many hours is escalated to the team's specialist.")
    mqtt_url: str | None = Field(default=None, description="mqtt://HOST:PORT of the broker "
                                 "home meters publish to; empty: no MQTT device gateway.")
    mqtt_topic: str = "hie/devices/+/readings"
    mqtt_client_id: str = Field(default="hie-hub-devices", description="Stable: the broker "
                                "keeps this session's unacknowledged readings across "
                                "restarts (persistent session).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", frozen=True)

    kafka_bootstrap: str | None = Field(
        default=None,
        description="HOST:PORT of an existing Kafka; empty means start the bundled broker.",
    )
    embedded_broker_port: int = 19092
    broker_wait_seconds: float = Field(
        default=5.0, gt=0, description="How long a command waits for Kafka to answer before "
        "it gives up (a mistyped --kafka should fail fast; deployments where Kafka starts "
        "alongside the hub raise it).")
    enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer; on for Apache Kafka (the bundled broker rejects it).",
    )
    group_prefix: str = Field(
        default="hub", description="Prefix of the hub's consumer group ids.")
    events_partitions: int = 6
    replication_factor: int = 1
    topics: Topics = Field(default_factory=Topics)
    monitoring: Monitoring = Field(default_factory=Monitoring)

    data_dir: Path = Path("hub-data")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; empty means a SQLite file hub.db in data_dir.",
    )
    facilities_file: Path | None = Field(
        default=None, description="Consortium YAML; empty means the bundled demo consortium."
    )
    signing_key_file: Path | None = Field(
        default=None, description="The hub's Ed25519 private key (PEM), which the gateway "
        "signs accepted events with; empty means hub-signing-key.pem in data_dir, generated "
        "on first start. Replicas of one hub share it.")
    identity_secret_file: Path | None = Field(
        default=None, description="Hex secret for the keyed hashes of national IDs and "
        "health cards (master patient index, shared record); empty means identity-secret in "
        "data_dir, generated on first start. Replicas of one hub share it.")
    replica_name: str = Field(
        default="", description="This process's name in the lease tables (who makes the "
        "patient index's decisions); empty means the host name. Replicas sharing the host's "
        "network (containers) need one each.")
    recognition_catalogue: Path | None = Field(
        default=None, description="Mutual test recognition catalogue (YAML); empty means "
        "the example catalogue in schemas/recognition-catalogue.yaml.")
    imaging_claim_minutes: float = Field(
        default=30, gt=0, description="How long a reader's claim on a study lasts before "
        "another reader may take it.")
    referral_sla_minutes: dict[str, float] = Field(
        default_factory=lambda: {"stat": 30, "asap": 60, "urgent": 120},
        description="The green channel: minutes from a referral's arrival to its acceptance, "
        "per priority (JSON, e.g. {\"stat\": 30, \"urgent\": 120}); a priority not named "
        "(routine) has no SLA.")
    referral_expiry_hours: float = Field(
        default=7 * 24, gt=0, description="A referral nobody accepted or rejected within "
        "this many hours expires.")
    mpi_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often the patient index looks for new or changed "
        "Patient records to match when it has nothing to do.")
    registry_poll_seconds: float = Field(
        default=2.0, gt=0, description="How often the hub looks for changes to the "
        "consortium file and publishes them as Organization events.")

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024

    validation_workers: int = Field(
        default=0, ge=0, description="Worker processes for parsing and validation at the "
        "edge (gateway and ingest stage); 0 validates in the serving process.")
    batch_max_records: int = 2000
    fetch_max_wait_ms: int = 20
    max_retries: int = 3
    consumer_groups: bool = Field(
        default=True, description="Join consumer groups, so that several hub processes share "
        "the partitions; false: this process reads every partition itself (a hub that runs "
        "alone starts faster).")
    session_timeout_ms: int = Field(
        default=10000, description="Consumer group session timeout; a dead member's "
        "partitions move to the others after this long.")
    publish_timeout_s: float = Field(
        default=1.5, gt=0, description="A publish call (a gateway request's append) that the "
        "broker has not acknowledged within this many seconds fails (the gateway answers 503 "
        "with Retry-After); an unreachable broker fails calls at once.")
    ack_after: Literal["journal", "broker"] | None = Field(
        default=None, description="When the gateway answers 2xx: 'broker' once the broker "
        "acknowledged the event (acks=all; durable on a replicated Apache Kafka log), "
        "'journal' once the SQL journal has committed it too (group commit). Empty: "
        "'journal' with the bundled broker, which keeps nothing on disk, else 'broker'.")
    export_retention_hours: float = Field(
        default=24.0, gt=0, description="How long the files of a finished bulk export "
        "stay downloadable; after that they are deleted and the job answers 404.")
    ack_timeout_s: float = Field(
        default=5.0, gt=0, description="With ack_after=journal: how long a request waits, "
        "after the broker's acknowledgement, for the journal to commit its events; past it "
        "the answer is 503 (not acknowledged).")
    stop_timeout_s: float = Field(
        default=30.0, gt=0, description="On SIGINT/SIGTERM, how long the hub may take to "
        "finish accepted requests and let the journal and projections catch up with the "
        "log before it exits anyway (a second signal exits at once).")
    crash_at: str | None = Field(
        default=None,
        description="Fault injection for crash tests: 'stage:N' exits hard at the Nth visit.",
    )

    @property
    def bootstrap(self) -> str:
        """The bootstrap the hub uses; the embedded broker's when none is configured."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.embedded_broker_port}"

    @property
    def embedded(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def durable_ack(self) -> bool:
        """True when a gateway 2xx waits for the journal's commit (see ``ack_after``)."""
        return (self.ack_after or ("journal" if self.embedded else "broker")) == "journal"

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hub.db').resolve()}"

    @property
    def identity_secret_path(self) -> Path:
        return self.identity_secret_file or self.data_dir / "identity-secret"

    @property
    def hub_key_path(self) -> Path:
        return self.signing_key_file or self.data_dir / "hub-signing-key.pem"


def load_settings(**overrides: object) -> Settings:
    """Build the frozen settings once at start-up; CLI flags arrive as overrides."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)
