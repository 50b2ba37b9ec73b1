# Fan-out (issue 12): SNS-style subscriptions that deliver a topic's records to queues and webhooks. So far it holds
# SNS's filter policy language: filter_policy.py validates a policy once, matching.py is what it compiles to, the
# matcher the fan-out calls per record. Sans-IO: no clock, no trio, no sockets, no files; must not know about
# cursors' storage or any protocol.
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
