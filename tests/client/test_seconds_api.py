# Seconds everywhere outside the wire (issue 13 item 7): a Python API keyword in milliseconds where the API takes
# seconds (kafka-python's and the wire's spelling) is refused naming the keyword to use and the value in seconds,
# before anything is done; keywords that are milliseconds by nature (a record's timestamp_ms) are untouched.
from __future__ import annotations

import dataclasses
import inspect

import pytest
import trio

from millpond.client import connect
from millpond.client._client import Client
from millpond.client.consumer import Consumer
from millpond.client.producer import Producer
from millpond.client.queues import Queue
from millpond.client.sync import SyncClient, SyncConsumer
from millpond.client.sync import connect as sync_connect


def bare(cls):
    return object.__new__(cls)  # the check runs before the method body: no broker needed


@pytest.mark.parametrize("call, message", [
    (lambda: bare(Client).producer(linger_ms=5),
     "Client.producer() takes 'linger_s' in seconds, not 'linger_ms' in milliseconds (linger_s=0.005)"),
    (lambda: bare(Client).consumer("t", session_timeout_ms=10_000),
     "Client.consumer() takes 'session_timeout_s' in seconds, not 'session_timeout_ms' in milliseconds "
     "(session_timeout_s=10)"),
    (lambda: bare(SyncClient).producer(linger_ms=5),
     "SyncProducer() takes 'linger_s' in seconds, not 'linger_ms' in milliseconds (linger_s=0.005)"),
    (lambda: bare(SyncConsumer).getmany(timeout_ms=100),
     "SyncConsumer.getmany() takes 'timeout_s' in seconds, not 'timeout_ms' in milliseconds (timeout_s=0.1)"),
    (lambda: bare(SyncClient).consumer("t", group="g", session_timeout_ms=1000),
     "SyncClient.consumer() takes 'session_timeout_s' in seconds, not 'session_timeout_ms' in milliseconds "
     "(session_timeout_s=1)"),
    (lambda: sync_connect("127.0.0.1:1", connect_timeout_ms=500),
     "connect() takes 'connect_timeout_s' in seconds, not 'connect_timeout_ms' in milliseconds "
     "(connect_timeout_s=0.5)"),
])
def test_a_millisecond_keyword_is_refused_with_the_one_to_use(call, message):
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value) == message


@pytest.mark.parametrize("call, message", [
    (lambda: bare(Client).create_topic("t", retention_ms=60_000),
     "Client.create_topic() takes 'retention_s' in seconds, not 'retention_ms' in milliseconds (retention_s=60)"),
    (lambda: bare(Consumer).getmany(timeout_ms=100),
     "Consumer.getmany() takes 'timeout_s' in seconds, not 'timeout_ms' in milliseconds (timeout_s=0.1)"),
    (lambda: bare(Queue).receive(wait_ms=20_000),
     "Queue.receive() takes 'wait_s' in seconds, not 'wait_ms' in milliseconds (wait_s=20)"),
])
def test_async_methods_refuse_when_awaited_and_stay_coroutine_functions(call, message):
    with pytest.raises(TypeError) as info:
        trio.run(call)
    assert str(info.value) == message
    for method in (Client.create_topic, Consumer.getmany, Queue.receive):
        assert inspect.iscoroutinefunction(method)


def test_async_connect_refuses_too():
    async def main() -> None:
        async with connect("127.0.0.1:1", request_timeout_ms=100):
            pass

    with pytest.raises(TypeError, match=r"connect\(\) takes 'request_timeout_s' in seconds, not 'request_timeout_ms'"):
        trio.run(main)


def test_keywords_in_milliseconds_by_nature_and_unknown_ones_are_left_to_python():
    assert "timestamp_ms" in inspect.signature(Producer.send).parameters  # a record's timestamp: ms, as Kafka's
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour_ms'"):
        bare(Client).producer(colour_ms=1)  # no colour_s either: Python's own error


def test_every_public_method_taking_seconds_of_the_clients_classes_refuses_milliseconds():
    """The whole kind: each public class of the client whose ``__init__`` or public methods take ``x_s`` is
    wrapped by ``seconds_api`` (a decorator moved off its class once left Producer.close taking timeout_ms= as
    Python's bare 'unexpected keyword')."""
    import millpond.client as client_pkg
    import millpond.client.sync as sync_mod
    from millpond.client.subscription import Subscription
    from millpond.client.worker import Worker

    classes = {c for c in vars(client_pkg).values() if inspect.isclass(c) and c.__module__.startswith("millpond.client")}
    classes |= {c for c in vars(sync_mod).values() if inspect.isclass(c) and c.__module__ == sync_mod.__name__}
    classes |= {Producer, Consumer, Queue, Worker, Subscription, Client}
    unwrapped = []
    checked = 0
    for cls in sorted(classes, key=lambda c: c.__qualname__):
        if cls.__name__.startswith("_") or (dataclasses.is_dataclass(cls) and not hasattr(cls, "nack")):
            continue  # values the API returns (their fields are seconds); a pushed message's nack is a call
        for name, fn in vars(cls).items():
            if not inspect.isfunction(fn) or (name != "__init__" and name.startswith("_")):
                continue
            params = inspect.signature(inspect.unwrap(fn)).parameters
            if any(p.endswith("_s") for p in params):
                checked += 1
                if not hasattr(fn, "__wrapped__"):
                    unwrapped.append(f"{cls.__qualname__}.{name}")
    assert checked >= 20 and unwrapped == []
    with pytest.raises(TypeError, match=r"Producer.close\(\) takes 'timeout_s' in seconds, not 'timeout_ms'"):
        trio.run(lambda: bare(Producer).close(timeout_ms=500))
