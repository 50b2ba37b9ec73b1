# Helpers for the filter policy tests: run one record through the compiled policy and through the reference
# interpreter, insist they agree, and give the answer.
from __future__ import annotations

import json
from typing import Any

from millpond.broker.core.fanout import compile_policy
from reference_filter import reference_matches


def on_headers(policy: dict[str, Any], *headers: tuple[str, str | bytes]) -> bool:
    """Does a record with these headers (text is UTF-8 encoded; a name may repeat) pass ``policy``?"""
    raw = [(name, v.encode() if isinstance(v, str) else v) for name, v in headers]
    got = compile_policy(policy).matches(raw, b"ignored")
    assert got == reference_matches(policy, "MessageAttributes", raw, b"ignored"), (policy, raw)
    return got


def on_body(policy: dict[str, Any], body: Any) -> bool:
    """Does a record whose value is ``body`` (JSON-encoded unless bytes) pass ``policy`` on the value?"""
    value = body if isinstance(body, bytes) else json.dumps(body).encode()
    got = compile_policy(policy, "MessageBody").matches([("ignored", b"x")], value)
    assert got == reference_matches(policy, "MessageBody", [], value), (policy, value)
    return got
