"""Kafka access: the bundled broker, topics, producer and consumer settings."""
