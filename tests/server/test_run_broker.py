# The broker outside a Trio program: run_broker (a background thread) from plain code and asyncio, its address as
# "HOST:PORT", start failures raised in the caller's thread, and open_broker used outside Trio naming run_broker.
from __future__ import annotations

import asyncio
import threading

import pytest

import millpond
from millpond.broker.server.embedded import ThreadedBroker, run_broker
from millpond.client import connect
from millpond.client.errors import InvalidConfigError
from millpond.client.sync import connect as sync_connect


def test_a_broker_in_a_thread_serves_blocking_and_asyncio_clients(tmp_path):
    with millpond.run_broker(tmp_path / "data", fsync="never") as b:
        assert isinstance(b, ThreadedBroker)
        assert b.host == "127.0.0.1" and b.port > 0 and b.address == f"127.0.0.1:{b.port}"
        assert b.data_dir == tmp_path / "data" and b.broker.config.fsync == "never"
        with sync_connect(b.address) as c, sync_connect((b.host, b.port)) as by_parts:
            # every address the user sees is "HOST:PORT", however it was given
            assert c.address == by_parts.address == b.address
            c.create_topic("t")
            with c.producer() as p:
                p.send("t", b"one")

        async def main() -> list[bytes]:
            async with connect(b.address) as c:
                assert (c.address, c.host, c.port) == (b.address, b.host, b.port)
                async with c.consumer("t", auto_offset_reset="earliest") as cons:
                    return [r.value for r in await cons.getmany(timeout_s=5)]

        assert asyncio.run(main()) == [b"one"]
    assert not any(t.name == "millpond-broker" for t in threading.enumerate())
    b.close()  # a second close does nothing
    with run_broker(tmp_path / "data") as again:  # the data survived the stop
        with sync_connect(again.address) as c:
            assert c.describe_topic("t").records == 1


def test_a_temporary_data_directory_is_removed_on_exit():
    with run_broker(fsync="never") as b:
        where = b.data_dir
        assert where.is_dir()
    assert not where.exists()


def test_what_stops_it_from_starting_is_raised_in_the_callers_thread(tmp_path):
    with run_broker(fsync="never") as b:
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{b.port}"):
            run_broker(tmp_path / "d", port=b.port)
    with pytest.raises(InvalidConfigError):
        run_broker(fsync="sometimes")
    assert not any(t.name == "millpond-broker" for t in threading.enumerate())


def test_open_broker_outside_trio_names_run_broker():
    async def under_asyncio() -> None:
        async with millpond.open_broker():
            pass

    with pytest.raises(RuntimeError, match=r"inside a Trio program.*millpond\.run_broker\(\)"):
        asyncio.run(under_asyncio())
    agen = millpond.open_broker().__aenter__()  # no event loop at all: driven by hand
    with pytest.raises(RuntimeError, match=r"millpond\.run_broker\(\)"):
        agen.send(None)
