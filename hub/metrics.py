"""Prometheus metrics, served by the API at /metrics."""

from prometheus_client import Counter, Gauge, Histogram

EVENTS_ACCEPTED = Counter("hub_events_accepted_total", "Events appended to the log",
                          ["path", "facility"])
EVENTS_REJECTED = Counter("hub_events_rejected_total", "Events dead-lettered at the edge",
                          ["path", "reason"])
EVENTS_APPLIED = Counter("hub_projection_events_applied_total", "Events a projection applied",
                         ["projection"])
EVENTS_SKIPPED = Counter("hub_projection_events_skipped_total",
                         "Re-delivered events a projection recognised and skipped",
                         ["projection"])
DEADLETTERED = Counter("hub_projection_deadletters_total",
                       "Events a projection gave up on after retries", ["projection"])
DEADLETTERS_UNRECORDED = Counter(
    "hub_deadletters_unrecorded_total",
    "Refusals whose dead letter could not be written to SQL (the gateway answered 503)",
    ["path"])
DEADLETTERS_UNPUBLISHED = Counter(
    "hub_deadletters_unpublished_total",
    "Dead letters kept in SQL but not published to the dead-letter topic (broker away)",
    ["path"])
BATCH_SECONDS = Histogram("hub_projection_batch_seconds", "Time to apply and commit a batch",
                          ["projection"])
LAG = Gauge("hub_projection_lag_events", "Events in the log not yet applied", ["projection"])
COMPONENT_RESTARTS = Counter("hub_component_restarts_total",
                             "Components (runner, ingest, feed...) restarted after they died",
                             ["component"])
INBOUND_DUPLICATES = Counter(
    "hub_inbound_duplicates_total",
    "Inbound events sent again after the journal had them (answered with a receipt)")
