# Fan-out (issue 12): SNS-style subscriptions that deliver a topic's records to queues and webhooks.
# filter_policy.py validates SNS's filter policy language once, matching.py is what it compiles to, the matcher the
# fan-out calls per record; subscriptions.py is the subscriptions' state (cursors, counters) as events,
# journal.py makes them durable in __millpond_subscriptions, delivery.py turns a record into a queue message,
# pump.py delivers in bounded turns, exactly once into queues, webhook.py is a webhook's delivery policy,
# allow-list and state, http.py its POST (the one I/O, run in a worker thread as a Job), and api.py is the typed
# requests and what the engine drives.
# Sans-IO but for http.py: no clock, no trio, no sockets; its only IO is the journal's appends and the log's reads
# through the LogManager; must not know about any protocol.
from millpond.broker.core.fanout.filter_policy import (
    COMBINATIONS_MAX,
    KEYS_MAX,
    MESSAGE_ATTRIBUTES,
    MESSAGE_BODY,
    NUMBER_ABS_MAX,
    POLICY_BYTES_MAX,
    SCOPES,
    FilterPolicy,
    compile_policy,
)

__all__ = [
    "COMBINATIONS_MAX", "KEYS_MAX", "MESSAGE_ATTRIBUTES", "MESSAGE_BODY", "NUMBER_ABS_MAX", "POLICY_BYTES_MAX",
    "SCOPES", "FilterPolicy", "compile_policy",
]
