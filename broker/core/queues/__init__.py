# Queues (issue 11): SQS-style work queues. attributes.py validates names and SQS's ranges; queue.py is one queue's
# state machine (delayed / visible / in flight, FIFO groups, deduplication window, timers in sorted structures);
# manager.py holds every queue and SQS's rules (receipt handles, lazy dead-letter redrive) as events; redrive.py
# the redrive tasks moving dead letters back (StartMessageMoveTask), driven by the manager's timers; journal.py
# makes those events durable in the internal topic __millpond_queues and replays them at open; api.py is the typed
# requests and their handlers; push.py is push delivery (a connection's subscriptions with a prefetch window, as
# RabbitMQ's consumer prefetch), its deliveries receives and its acks deletes. Sans-IO: takes `now` (monotonic s)
# and `now_ms` (wall-clock ms), never reads a clock, waits, imports trio or opens a socket; its only IO is the
# journal's appends through the LogManager.
"""SQS-style queues.

Departures from SQS (docs/queues.md says the same to users; each for a reason a test of one embedded process
cares about):

* ``receive`` takes up to 1,000 messages (SQS: 10), bounded by the answer's byte budget.
* Purge is immediate and may be repeated at once; a deleted queue's name can be used again at once (SQS: 60 s for
  each, PurgeQueueInProgress / QueueDeletedRecently).
* A delete with an older receipt handle, after the message was received again, succeeds and never deletes the new
  delivery (SQS: "might not be deleted").
* A message moved to a dead-letter queue starts there with a receive count of 0 (its id, body, attributes,
  group and first-send time are kept: retention keeps counting from the first send, as SQS).
* Message bodies are bytes: any byte is allowed (SQS: a restricted set of Unicode characters).
* FIFO: deduplication is queue-wide (no ``DeduplicationScope=messageGroup``); sequence numbers are consecutive
  integers per queue (SQS: large, non-consecutive); changing a FIFO queue's delay is not retroactive.
* Approximate counts are exact. No in-flight limit (SQS: 120,000), no ReceiveRequestAttemptId; instead a queue's
  depth is bounded by the broker's ``queue_messages_max`` (QUEUE_FULL, retriable).
* A send batch is charged to the limit policies (as a produce) for all its entries, refused ones included.
* Redrive tasks (StartMessageMoveTask): up to 10,000 messages/s (SQS: 500); without a rate, 500/s (SQS picks
  one); a moved message keeps its message id (SQS: a new one), with a new retention period as SQS; cancelling is
  immediate (no CANCELLING); a restarted broker resumes a running task at its rate from the restart; a task has
  no time limit (SQS: 36 hours).
"""
from millpond.broker.core.queues.api import QueueApi, queue_key
from millpond.broker.core.queues.attributes import QueueAttributes
from millpond.broker.core.queues.journal import QUEUES_TOPIC, QueueJournal
from millpond.broker.core.queues.manager import Delivery, QueueManager

__all__ = ["Delivery", "QUEUES_TOPIC", "QueueApi", "QueueAttributes", "QueueJournal", "QueueManager", "queue_key"]
