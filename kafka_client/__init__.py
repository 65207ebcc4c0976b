"""The project's one Kafka client package (confluent-kafka): config dicts, reachability, admin and topics, factories.

Every Kafka client the project makes is configured here: the replay's producer, the
Beam Kafka IO in ``transforms/``, the API's consumer (``api/broker.py``), the topic
commands (``runners/topics.py``) and ``traffic run``. It sits below ``transforms``
and ``api`` and reads only ``config`` and ``schemas``. (quix-streams keeps its
client code in ``quixstreams/kafka/`` the same way.)
"""

from __future__ import annotations

from kafka_client.admin import (
    TopicError,
    TopicState,
    admin_client,
    create_topics,
    delete_topics,
    describe_topics,
    topic_configs,
)
from kafka_client.config import (
    DEFAULT_TIMEOUT_S,
    client_config,
    consumer_config,
    default_bootstrap_servers,
    producer_config,
)
from kafka_client.factories import make_consumer, make_producer, produce_at
from kafka_client.reachability import KafkaUnavailableError, check_kafka, unreachable

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "KafkaUnavailableError",
    "TopicError",
    "TopicState",
    "admin_client",
    "check_kafka",
    "client_config",
    "consumer_config",
    "create_topics",
    "default_bootstrap_servers",
    "delete_topics",
    "describe_topics",
    "make_consumer",
    "make_producer",
    "produce_at",
    "producer_config",
    "topic_configs",
    "unreachable",
]
