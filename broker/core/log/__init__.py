# The partition log (Kafka's storage model): topics, partitions, segments, retention and recovery, over one storage
# contract with a file and a memory implementation (store.py). Sans-IO on the event loop: blocking file work is
# handed out as sync plans, pending topic changes and jobs for worker threads; takes now_ms, never reads a clock,
# imports trio or opens a socket. Knows nothing of the wire protocol beyond the batch format object it is given.
from millpond.broker.core.log.batch_format import V2, BatchFormat
from millpond.broker.core.log.manager import LogManager, Topic
from millpond.broker.core.log.partition import PartitionLog
from millpond.broker.core.log.pending import PendingDelete, PendingPartitions, PendingTopic, SyncPlan
from millpond.broker.core.log.topic_config import INTERNAL_TOPIC_PREFIX, TopicConfig, is_internal_topic, validate_topic_name

__all__ = [
    "INTERNAL_TOPIC_PREFIX", "V2", "BatchFormat", "LogManager", "PartitionLog", "PendingDelete",
    "PendingPartitions", "PendingTopic", "SyncPlan", "Topic", "TopicConfig", "is_internal_topic",
    "validate_topic_name",
]
