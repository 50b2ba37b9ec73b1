"""Video upload fan-out: one "video uploaded" publish reaches three queues, each drained by its own worker.

What it shows: the upload service publishes one record per uploaded video to the topic ``video-uploaded``, with
the video's format as a header. Three subscriptions (SNS-style, with queues as endpoints) deliver each record into
their queue exactly once: ``notify-subscribers`` and ``analytics`` get every upload, ``compress`` only the
formats that need transcoding (a filter policy on the ``format`` header: mov and avi; mp4 and webm are served as
uploaded). Each queue is drained by its own worker (``Queue.worker``, the worker runner: it long-polls, calls the
handler, deletes what succeeded). The upload service knows none of them: adding a fourth consumer is one more
subscription.

Run it (an embedded broker on Trio's virtual clock, so the workers' long polls and the transcoding take no real
time):

    python examples/video_fanout.py
    python examples/video_fanout.py --broker 127.0.0.1:7420     # a running `millpond serve`, in real time
"""
from __future__ import annotations

import argparse
import json
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import trio
import trio.testing

from millpond import connect

from examplekit import broker_address, run_example  # examples/examplekit.py

UPLOADS = [  # (video id, channel, format, seconds long)
    ("v1", "cooking-with-ada", "mov", 312), ("v2", "cooking-with-ada", "mp4", 95),
    ("v3", "grace-talks", "avi", 1804), ("v4", "grace-talks", "webm", 61),
    ("v5", "alan-plays", "mp4", 640), ("v6", "alan-plays", "mov", 47), ("v7", "cooking-with-ada", "webm", 233),
]
FOLLOWERS = {"cooking-with-ada": 1200, "grace-talks": 87, "alan-plays": 5400}
NEEDS_TRANSCODING = ["mov", "avi"]
COMPRESS_FILTER = {"format": NEEDS_TRANSCODING}  # an SNS filter policy on the record headers


@dataclass
class Outcome:
    compressed: list[str] = field(default_factory=list)  # video ids, as the compress worker handled them
    notified: list[str] = field(default_factory=list)
    analysed: list[str] = field(default_factory=list)
    formats: Counter = field(default_factory=Counter)  # the analytics worker's count of uploads per format
    minutes: int = 0  # the analytics worker's total of minutes uploaded
    followers_notified: int = 0
    subscriptions: dict[str, tuple[int, int]] = field(default_factory=dict)  # queue -> (delivered, filtered out)
    processed: dict[str, int] = field(default_factory=dict)  # queue -> the worker's processed count
    left: dict[str, int] = field(default_factory=dict)  # queue -> messages still visible or in flight


async def run(address: str | None = None, *, say: Callable[[str], Any] = print) -> Outcome:
    out = Outcome()

    # -- the three workers' handlers: each gets one queue message, the upload record as published (raw delivery)
    async def compress(message: Any) -> None:
        video = json.loads(message.body)
        await trio.sleep(video["seconds"] / 100)  # transcoding takes a while
        out.compressed.append(video["id"])
        say(f"    [compress] {video['id']}.{message.attributes['format']} transcoded to mp4")

    async def notify(message: Any) -> None:
        video = json.loads(message.body)
        followers = FOLLOWERS[video["channel"]]
        out.notified.append(video["id"])
        out.followers_notified += followers
        say(f"    [notify]   {followers} followers of {video['channel']} told about {video['id']}")

    async def analyse(message: Any) -> None:
        video = json.loads(message.body)
        out.analysed.append(video["id"])
        out.formats[message.attributes["format"]] += 1
        out.minutes += video["seconds"] // 60

    async with broker_address(address, fsync="never") as where, connect(where, client_id="video-site") as client:
        suffix = "" if address is None else "-" + secrets.token_hex(3)  # a shared broker: fresh names per run
        topic = "video-uploaded" + suffix
        await client.create_topic(topic, partitions=3)
        handlers = {"compress" + suffix: compress, "notify-subscribers" + suffix: notify,
                    "analytics" + suffix: analyse}
        subscription_ids = {}
        for queue in handlers:
            await client.create_queue(queue, visibility_timeout_s=30)
            policy = COMPRESS_FILTER if queue.startswith("compress") else None
            info = await client.subscribe(topic, queue=queue, filter_policy=policy, raw=True)
            subscription_ids[queue] = info.id
            say(f"subscription {topic} -> {queue}" + (f", filter policy {json.dumps(policy)}" if policy else ""))

        expected = {"compress" + suffix: sum(1 for u in UPLOADS if u[2] in NEEDS_TRANSCODING),
                    "notify-subscribers" + suffix: len(UPLOADS), "analytics" + suffix: len(UPLOADS)}
        async with trio.open_nursery() as nursery:
            workers = {}
            for queue, handler in handlers.items():
                workers[queue] = await nursery_worker(nursery, client.queue(queue), handler)
            say("")
            for video_id, channel, fmt, seconds in UPLOADS:
                value = json.dumps({"id": video_id, "channel": channel, "seconds": seconds}).encode()
                meta = await client.publish(topic, value, headers={"format": fmt}, key=channel)
                say(f"  upload service: {video_id}.{fmt} from {channel} published "
                    f"(partition {meta.partition}, offset {meta.offset}); it returns at once")
            with trio.fail_after(120):  # every worker has handled what its subscription delivered
                while any(w.statistics().processed < expected[q] for q, w in workers.items()):
                    await trio.sleep(0.1)
            for w in workers.values():
                w.stop()
        for queue, w in workers.items():
            out.processed[queue.removesuffix(suffix)] = w.statistics().processed
        for queue, sub_id in subscription_ids.items():
            d = await client.describe_subscription(sub_id)
            out.subscriptions[queue.removesuffix(suffix)] = (d.delivered, d.filtered_out)
            info = await client.queue_attributes(queue)
            out.left[queue.removesuffix(suffix)] = info.messages_visible + info.messages_in_flight

    say(f"\n{len(UPLOADS)} uploads published once each; per subscription:")
    for queue, (delivered, filtered) in out.subscriptions.items():
        say(f"  {queue:<20} delivered {delivered}, filtered out {filtered}, worker processed "
            f"{out.processed[queue]}, left in the queue {out.left[queue]}")
    say(f"analytics: {dict(sorted(out.formats.items()))}, {out.minutes} minutes of video; "
        f"{out.followers_notified} follower notifications")
    return out


async def nursery_worker(nursery: Any, queue: Any, handler: Callable[[Any], Any]) -> Any:
    """Run ``queue.worker(handler)`` in ``nursery`` until it is stopped; returns the worker."""
    worker = queue.worker(handler, wait_s=1.0)

    async def life(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with worker:
            task_status.started()
            await worker.wait()

    await nursery.start(life)
    return worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Video upload fan-out: one publish, three queues, three workers.")
    parser.add_argument("--broker", metavar="HOST:PORT", help="a running broker (default: an embedded one)")
    args = parser.parse_args(argv)
    # embedded: the broker and the workers share Trio's virtual clock, which skips ahead whenever all wait
    clock = None if args.broker else trio.testing.MockClock(autojump_threshold=0)
    run_example("video_fanout", lambda: trio.run(run, args.broker, clock=clock))


if __name__ == "__main__":
    main()
