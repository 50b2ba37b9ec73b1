# The durable, segmented, crash-safe partition log (Kafka's storage model): topics, partitions, segments, indexes,
# retention and recovery. Sans-IO except for files: synchronous, takes now_ms, never reads a clock, imports trio or
# opens a socket. Knows nothing of the wire protocol beyond the record batch layout.
from millpond.broker.core.log.manager import LogManager, Topic
from millpond.broker.core.log.partition import PartitionLog
from millpond.broker.core.log.topic_config import INTERNAL_TOPIC_PREFIX, TopicConfig, is_internal_topic, validate_topic_name

__all__ = [
    "INTERNAL_TOPIC_PREFIX", "LogManager", "PartitionLog", "Topic", "TopicConfig", "is_internal_topic",
    "validate_topic_name",
]
