# Helpers shared by the client test files. (A uniquely named module rather than conftest or a test file, so test
# files can import it; the server tests have serverkit, the core tests logkit/groupkit/limitkit.)
from __future__ import annotations

import trio


async def drain(cons, n: int, timeout_s: float = 10) -> list:
    """The next ``n`` records of the consumer, within ``timeout_s`` (real or virtual time, whichever clock runs)."""
    got: list = []
    with trio.fail_after(timeout_s):
        while len(got) < n:
            got += await cons.getmany(max_records=n - len(got))
    return got
