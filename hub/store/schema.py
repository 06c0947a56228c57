"""The hub's own tables: consumer positions, projection versions, applied ids, the journal,
the dead letters."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()



def outbox_table(name: str, metadata: sa.MetaData) -> sa.Table:
    """A change feed's outbox: messages written with the rows they describe, then relayed
    in ``seq`` order by ``hub.engine.outbox`` (``patient_key`` is the Kafka key)."""
    t = sa.Table(
        name, metadata,
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("feed_id", sa.String(220), nullable=False, unique=True),
        sa.Column("patient_key", sa.String(200), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("sent", sa.Boolean, nullable=False, default=False),
    )
    sa.Index(f"ix_{name}_unsent", t.c.sent, t.c.seq)
    return t

# Last offset each consumer applied, per topic identity (Kafka topic id) and partition.
# Written in the same transaction as the consumer's rows: this *is* the consumer's progress;
# Kafka's committed offsets are only a hint for monitoring tools.
positions = sa.Table(
    "hub_positions",
    metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("topic", sa.String(249), primary_key=True),
    sa.Column("topic_id", sa.String(64), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("offset", sa.BigInteger, nullable=False),
)

# Event ids a consumer applied: a re-delivered event (producer retry, replay from another
# log incarnation) hits the primary key and is skipped.
applied = sa.Table(
    "hub_applied",
    metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
)

# Which version of each projection's code built its tables, and a fencing epoch bumped by
# every rebuild swap so that live runners re-seek to the swapped-in positions.
projections = sa.Table(
    "hub_projections",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("epoch", sa.Integer, nullable=False, default=0),
    sa.Column("rebuilt_at", sa.String(40)),
)

# The durable archive of every accepted event, in the order the journal consumed them.
# With the memory-only bundled broker this is what survives a restart.
journal = sa.Table(
    "hub_journal",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("event_id", sa.String(200), nullable=False, unique=True),
    sa.Column("source", sa.String(200), nullable=False),
    sa.Column("type", sa.String(200), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("time", sa.String(40), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    # Text: a batch member's signature carries its manifest path (~440 characters at 100).
    sa.Column("signature", sa.Text),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("topic_id", sa.String(64), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
    # Where each event sat in the log: projections catching up on a log that is gone
    # (hub.engine.catchup) look their missed events up by it.
    sa.Index("ix_hub_journal_origin", "topic_id", "partition", "offset"),
)

# Every refused input, byte for byte, with why it was refused: the durable copy of what
# hie.deadletter.v1 carries (the bundled broker keeps that topic in memory only). ``id`` is
# derived from where the input was read when there is such a place (an inbound record, an
# event in the log), so handling the same record again after a crash adds no second row.
# ``refused_at`` is RFC 3339 UTC with microseconds (hub.clock), so text order is time order.
dead_letters = sa.Table(
    "hub_dead_letters",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("id", sa.String(64), nullable=False, unique=True),
    sa.Column("refused_at", sa.String(40), nullable=False, index=True),
    sa.Column("entry", sa.String(200), nullable=False),  # gateway, ingest, projection:<name>
    sa.Column("reason", sa.String(64), nullable=False, index=True),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("facility", sa.String(64), index=True),  # who sent it, or claimed to
    sa.Column("event_id", sa.String(200), index=True),
    sa.Column("resource_type", sa.String(64)),
    sa.Column("subject", sa.String(200)),
    sa.Column("patient_key", sa.String(200)),
    sa.Column("outcome", sa.Text),  # the OperationOutcome JSON the sender got
    sa.Column("original", sa.LargeBinary, nullable=False),
    sa.Column("original_key", sa.LargeBinary),
    sa.Column("original_headers", sa.Text, nullable=False),  # JSON, see hub.deadletters
    sa.Column("origin", sa.String(300)),  # topic/partition/offset it was read from
    sa.Column("published", sa.Boolean, nullable=False),  # also on hie.deadletter.v1
)

# Every read of patient data: who, what, when, which patient, allowed or refused.
audit = sa.Table(
    "hub_audit",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("recorded", sa.String(40), nullable=False),
    sa.Column("agent_kind", sa.String(20), nullable=False),
    sa.Column("agent_id", sa.String(100), nullable=False),
    sa.Column("interaction", sa.String(20), nullable=False),
    sa.Column("what", sa.Text, nullable=False),
    sa.Column("patient_key", sa.String(200), nullable=False, index=True),
    sa.Column("outcome", sa.String(2), nullable=False),
)

# Event ids the ingest stage has let into the log, and where each came from on the inbound
# topic. The same id again from the same place is a re-delivery after a crash (re-append:
# consumers skip it); from another place it is a replay (dead-lettered).
inbound_seen = sa.Table(
    "hub_inbound_seen",
    metadata,
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("topic_id", sa.String(64), nullable=False),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),
)

# What this hub last published to the log for each registry entry (digest of the
# Organization), so a restart publishes only what changed in the consortium file.
registry_sync = sa.Table(
    "hub_registry_sync",
    metadata,
    sa.Column("facility_id", sa.String(64), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("published", sa.String(40), nullable=False),
)

# Leases: which hub process holds a single-writer role (the patient index's decisions).
leases = sa.Table(
    "hub_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires", sa.Float, nullable=False),
)

# The recognition prompter's own state: which orders it has looked at, and the prompts it
# raised (open, or withdrawn when the results they relied on stopped qualifying).
recognition_prompts = sa.Table(
    "hub_recognition_prompts",
    metadata,
    sa.Column("request_id", sa.String(200), primary_key=True),
    sa.Column("status", sa.String(12), nullable=False),  # none | open | withdrawn
    sa.Column("facility", sa.String(64), nullable=False),
    sa.Column("patient_key", sa.String(200), nullable=False),
    sa.Column("ordered", sa.String(10), nullable=False),
    sa.Column("items", sa.Text, nullable=False),  # JSON: {item: [result ids relied on]}
    sa.Column("checked_at", sa.String(40), nullable=False),
)

# Outbox of hie.recognition.v1 (prompts and withdrawals), relayed like the feeds.
recognition_outbox = outbox_table("hub_recognition_outbox", metadata)


# Which patient each resource about a patient belongs to, claimed by the adapter that builds
# it before the resource is published (hub.record.owners): the first claim wins, and a later
# message naming the same resource for another patient is refused instead of moving it.
resource_patients = sa.Table(
    "hub_resource_patients",
    metadata,
    sa.Column("resource_type", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(200), primary_key=True),  # hub-wide id: <facility>.<local id>
    sa.Column("patient_key", sa.String(200), nullable=False),
)

# What this hub last published for each family-doctor team, signed resident and device of
# the consortium file (``hub.registry.care_sync``): a restart publishes only what changed,
# and an entry that left the file is published once as inactive.
care_sync = sa.Table(
    "hub_care_sync",
    metadata,
    sa.Column("sync_id", sa.String(200), primary_key=True),  # e.g. Device/bp-c1-01
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("published", sa.String(40), nullable=False),
)

# The remote-monitoring monitor's place in the readings it has judged (mon_reading.seq), so
# a restart judges only what is new (``hub.monitoring.service``).
monitor_cursor = sa.Table(
    "hub_monitor_cursor",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
)

# Readings the device intake has accepted (event ids derived from the reading): the same
# reading sent again is a duplicate, whatever the journal has caught up with. Written after
# the durable moment, so a crash before it only lets the resend through (same event id:
# consumers drop it), never marks a reading as kept that was not.
device_readings = sa.Table(
    "hub_device_readings",
    metadata,
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("accepted_at", sa.String(40), nullable=False),
)
